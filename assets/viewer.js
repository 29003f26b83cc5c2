/* 3D structure viewer: draws the structure on screen into the `viewer` div with 3Dmol.js
 * (assets/vendor/3Dmol-min.js, installed from npm by `make assets`). Called by a Dash clientside callback
 * with the viewer store ({lattice: 3x3 rows in Å, species: [symbol], frac: [[a, b, c]]}), the supercell
 * ("2x2x1"), the style ("ball-and-stick" | "spheres"), the polyhedra toggle (["on"] or []) and the polyhedra
 * store ({title, polyhedra: [{element, vertices: [[x, y, z]], faces: [[i, j, k]]}], sites: [hover line per
 * site]}, drawn translucent in the
 * centre's element colour in every cell of the supercell). Returns a status text for the page.
 * A local environment of the motif map comes with `cluster: true` and its own `polyhedra`: it is drawn alone (no
 * cell, no supercell), its centre (site 0) ringed and labelled, its polyhedron always shown. */
(function () {
  "use strict";

  function cartesian(lattice, f) {
    return [0, 1, 2].map(function (k) {
      return f[0] * lattice[0][k] + f[1] * lattice[1][k] + f[2] * lattice[2][k];
    });
  }

  function supercellAtoms(data, reps) {
    var atoms = [];
    for (var i = 0; i < reps[0]; i++) {
      for (var j = 0; j < reps[1]; j++) {
        for (var k = 0; k < reps[2]; k++) {
          data.frac.forEach(function (f, n) {
            atoms.push({ elem: data.species[n], pos: cartesian(data.lattice, [f[0] + i, f[1] + j, f[2] + k]) });
          });
        }
      }
    }
    return atoms;
  }

  function toXyz(atoms) {
    var lines = [String(atoms.length), "structure"];
    atoms.forEach(function (a) {
      lines.push(a.elem + " " + a.pos.map(function (v) { return v.toFixed(6); }).join(" "));
    });
    return lines.join("\n");
  }

  function drawCell(viewer, lattice, reps) {
    var corners = [];
    [0, 1].forEach(function (i) { [0, 1].forEach(function (j) { [0, 1].forEach(function (k) {
      corners.push({ f: [i, j, k], p: cartesian(lattice, [i * reps[0], j * reps[1], k * reps[2]]) });
    }); }); });
    corners.forEach(function (a) {
      corners.forEach(function (b) {
        var diff = [0, 1, 2].filter(function (d) { return a.f[d] !== b.f[d]; });
        if (diff.length === 1 && a.f[diff[0]] === 0) {
          viewer.addCylinder({ start: { x: a.p[0], y: a.p[1], z: a.p[2] }, end: { x: b.p[0], y: b.p[1], z: b.p[2] },
            radius: 0.04, color: "#444444", fromCap: 1, toCap: 1 });
        }
      });
    });
  }

  function elementColor(elem) {
    var table = ($3Dmol.elementColors && ($3Dmol.elementColors.Jmol || $3Dmol.elementColors.defaultColors)) || {};
    var value = table[elem] !== undefined ? table[elem] : 0x999999;
    return "#" + ("000000" + value.toString(16)).slice(-6);
  }

  function drawLegend(species) {
    var legend = document.getElementById("viewer-legend");
    if (!legend) { return; }
    legend.innerHTML = "";
    Array.from(new Set(species)).sort().forEach(function (elem) {
      var item = document.createElement("span");
      item.className = "legend-item";
      var chip = document.createElement("span");
      chip.className = "chip";
      chip.style.background = elementColor(elem);
      item.appendChild(chip);
      item.appendChild(document.createTextNode(elem));
      legend.appendChild(item);
    });
  }

  function styleOf(name) {
    if (name === "spheres") { return { sphere: { scale: 0.9, colorscheme: "Jmol" } }; }
    return { sphere: { scale: 0.3, colorscheme: "Jmol" }, stick: { radius: 0.15, colorscheme: "Jmol" } };
  }

  function drawPolyhedra(viewer, data, reps, shapes) {
    var count = 0;
    shapes.forEach(function (shape) {
      for (var i = 0; i < reps[0]; i++) { for (var j = 0; j < reps[1]; j++) { for (var k = 0; k < reps[2]; k++) {
        var shift = cartesian(data.lattice, [i, j, k]);
        var vertexArr = [], normalArr = [], faceArr = [];
        var p = shape.vertices.map(function (v) { return [v[0] + shift[0], v[1] + shift[1], v[2] + shift[2]]; });
        var centre = [0, 1, 2].map(function (d) {
          return p.reduce(function (s, v) { return s + v[d]; }, 0) / p.length;
        });
        shape.faces.forEach(function (face) {
          var a = p[face[0]], b = p[face[1]], c = p[face[2]];
          var u = [b[0] - a[0], b[1] - a[1], b[2] - a[2]], w = [c[0] - a[0], c[1] - a[1], c[2] - a[2]];
          var n = [u[1] * w[2] - u[2] * w[1], u[2] * w[0] - u[0] * w[2], u[0] * w[1] - u[1] * w[0]];
          var out = (a[0] - centre[0]) * n[0] + (a[1] - centre[1]) * n[1] + (a[2] - centre[2]) * n[2];
          var len = Math.sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2]) || 1;
          var sign = out < 0 ? -1 : 1;
          [a, b, c].forEach(function (v) {
            faceArr.push(vertexArr.length);
            vertexArr.push({ x: v[0], y: v[1], z: v[2] });
            normalArr.push({ x: sign * n[0] / len, y: sign * n[1] / len, z: sign * n[2] / len });
          });
        });
        viewer.addCustom({ vertexArr: vertexArr, normalArr: normalArr, faceArr: faceArr,
          color: elementColor(shape.element), opacity: 0.45 });
        count++;
      } } }
    });
    return count;
  }

  var pending = 0;

  function drawCentre(viewer, data) {
    var p = cartesian(data.lattice, data.frac[0]);
    viewer.addSphere({ center: { x: p[0], y: p[1], z: p[2] }, radius: 0.75, color: "#D55E00", opacity: 0.35 });
    viewer.addLabel("centre " + data.species[0], { position: { x: p[0], y: p[1], z: p[2] }, fontSize: 12,
      fontColor: "black", backgroundColor: "white", backgroundOpacity: 0.7, inFront: true });
  }

  /* Hover an atom: a label with its site and environment (``labels``: one line per site, from the motif panel or,
   * for an environment, from its payload); click: the same line with its coordinates kept under the viewer. */
  function pickable(viewer, data, labels) {
    var n = data.frac.length;
    function labelOf(atom) {
      var site = atom.index % n;
      return labels && labels[site] ? labels[site] : data.species[site] + " " + site;
    }
    viewer.setHoverable({}, true, function (atom, v) {
      if (!atom || atom.hoverLabel) { return; }
      atom.hoverLabel = v.addLabel(labelOf(atom), { position: { x: atom.x, y: atom.y, z: atom.z }, fontSize: 11,
        fontColor: "white", backgroundColor: "black", backgroundOpacity: 0.75, inFront: true });
      v.render();
    }, function (atom, v) {
      if (atom && atom.hoverLabel) { v.removeLabel(atom.hoverLabel); delete atom.hoverLabel; v.render(); }
    });
    viewer.setClickable({}, true, function (atom) {
      var box = document.getElementById("viewer-atom");
      if (!box || !atom) { return; }
      var f = data.frac[atom.index % n];
      box.textContent = labelOf(atom) + " · fractional (" + f.map(function (v) { return v.toFixed(4); }).join(", ") +
        ") · Cartesian (" + [atom.x, atom.y, atom.z].map(function (v) { return v.toFixed(3); }).join(", ") + ") Å";
      box.setAttribute("data-site", String(atom.index % n));
    });
  }

  function draw(element, data, reps, style, shapes, labels) {
    var cluster = data.cluster === true;
    if (cluster) { reps = [1, 1, 1]; shapes = Array.isArray(data.polyhedra) ? data.polyhedra : []; }
    var atoms = supercellAtoms(data, reps);
    if (!element._viewer) {
      element._viewer = $3Dmol.createViewer(element, { backgroundColor: "white" });
    }
    var viewer = element._viewer;
    viewer.clear();
    viewer.removeAllLabels();
    viewer.addModel(toXyz(atoms), "xyz");
    viewer.setStyle({}, styleOf(style));
    if (cluster) { drawCentre(viewer, data); labels = data.sites; } else { drawCell(viewer, data.lattice, reps); }
    pickable(viewer, data, labels);
    var drawn = shapes.length ? drawPolyhedra(viewer, data, reps, shapes) : 0;
    element.setAttribute("data-polyhedra", String(drawn));
    element.setAttribute("data-cluster", cluster ? "1" : "0");
    if (cluster) {  // the atoms alone (shapes and labels would widen the frame), turned off the axes
      viewer.zoomTo({ model: viewer.getModel() });
      viewer.rotate(25, "y");
      viewer.rotate(-20, "x");
      viewer.zoom(1.4);
    } else {
      viewer.zoomTo();
    }
    viewer.render();
    drawLegend(data.species);
    element.setAttribute("data-atoms", String(atoms.length));
    if (cluster) {
      return atoms.length + " atoms drawn (the environment: centre " + data.species[0] + " and " +
        (atoms.length - 1) + " neighbours" + (drawn ? ", its polyhedron" : "") + "): " + data.title;
    }
    return atoms.length + " atoms drawn (" + reps.join("×") + " cell)" +
      (shapes.length ? ", " + shapes.length + (shapes.length === 1 ? " polyhedron" : " polyhedra") + " per cell" : "") + ": " + data.title;
  }

  /* The structure's panel text is painted first, the 3D view right after: WebGL rendering can hold the
   * page's only thread for most of a second (software rendering), and the click should not wait for it. */
  function drawStructure(data, supercell, style, polyhedraOn, polyhedra) {
    var element = document.getElementById("viewer");
    if (!element || typeof $3Dmol === "undefined") { return "3Dmol.js is not loaded (run `make assets`)"; }
    if (!data) { return ""; }
    var reps = String(supercell || "1x1x1").split("x").map(function (n) { return parseInt(n, 10) || 1; });
    var on = Array.isArray(polyhedraOn) && polyhedraOn.indexOf("on") >= 0;
    var shapes = on && polyhedra && polyhedra.title === data.title && Array.isArray(polyhedra.polyhedra) ?
      polyhedra.polyhedra : [];
    var labels = polyhedra && polyhedra.title === data.title && Array.isArray(polyhedra.sites) ? polyhedra.sites : null;
    var ticket = ++pending;
    window.requestAnimationFrame(function () {
      window.setTimeout(function () {
        if (ticket !== pending) { return; }  // a newer structure came meanwhile
        var status = draw(element, data, reps, style, shapes, labels);
        window.dash_clientside.set_props("viewer-status", { children: status });
      }, 0);
    });
    return "drawing " + data.title + "…";
  }

  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    explorer: { drawStructure: drawStructure }
  });
})();
