"""Services: plain data in, plain data out (numpy, pymatgen Structures, bytes); never Dash components."""
