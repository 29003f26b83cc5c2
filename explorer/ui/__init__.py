"""The Dash user interface: ids, pure component builders, layout and thin callbacks."""
