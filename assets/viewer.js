/* 3D structure viewer: draws the structure on screen into the `viewer` div with 3Dmol.js
 * (assets/vendor/3Dmol-min.js, installed from npm by `make assets`). Called by a Dash clientside callback with:
 *  - the viewer store (explorer/services/cells.py `payload`): {lattice: 3x3 rows in Å, species: [symbol],
 *    frac: [[a, b, c]], bonds: [[i, j, [n1, n2, n3]]] (site i to site j shifted by n cells, each bond once, by
 *    the server's rule), title, cell (the cell choice), cell_text};
 *  - the supercell ("2x2x1"), the style ("ball-and-stick" | "spheres"), the polyhedra toggle (["on"] or []),
 *    the polyhedra store ({title, cell, polyhedra: [{element, vertices, faces}], sites: [hover line per site]}),
 *    the drawing options (["boundary"]: atoms on the cell's faces, edges and corners; ["images"]: bonds that
 *    cross the cell's boundary, with the periodic image they reach) and the atom labels ("none" | "element" |
 *    "site").
 * Bonds are the server's, never 3Dmol.js's guess, and a bond is drawn only between two atoms that are drawn.
 * Returns a status text for the page.
 * A local environment of the motif map comes with `cluster: true` and its own `polyhedra`: it is drawn alone (no
 * cell, no supercell), its centre (site 0) ringed and labelled, its polyhedron always shown.
 *
 * Also here: look along a, b or c; picking atoms (up to four: their site and cell go to the `store-picks` store,
 * the server measures them); the view saved as a PNG of a chosen size; and the compare view's two linked
 * viewers. */
(function () {
  "use strict";

  var NO_SHOW = true;  // 3Dmol.js's addLabel renders the whole scene unless told not to: a draw renders once
  var BOUNDARY_TOLERANCE = 0.05;  // Å from a face of the (super)cell: the atom is repeated on the opposite face
  var MAX_LABELS = 400;

  function cartesian(lattice, f) {
    return [0, 1, 2].map(function (k) {
      return f[0] * lattice[0][k] + f[1] * lattice[1][k] + f[2] * lattice[2][k];
    });
  }

  function norm(v) { return Math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]); }

  function keyOf(site, cell) { return site + "|" + cell.join(","); }

  /* Every atom drawn: {site, cell: [i, j, k], elem, pos, image} where `image` marks a periodic image drawn only
   * because a bond reaches it. */
  function atomsOf(data, reps, boundary) {
    var atoms = [], index = {};
    function add(site, cell, image) {
      var key = keyOf(site, cell);
      if (index[key] !== undefined) { return index[key]; }
      var f = data.frac[site];
      index[key] = atoms.length;
      atoms.push({ site: site, cell: cell.slice(), elem: data.species[site], image: !!image,
                   pos: cartesian(data.lattice, [f[0] + cell[0], f[1] + cell[1], f[2] + cell[2]]) });
      return index[key];
    }
    for (var i = 0; i < reps[0]; i++) { for (var j = 0; j < reps[1]; j++) { for (var k = 0; k < reps[2]; k++) {
      data.frac.forEach(function (_f, n) { add(n, [i, j, k], false); });
    } } }
    if (boundary) {
      var lengths = data.lattice.map(norm);
      atoms.slice().forEach(function (atom) {
        var f = data.frac[atom.site];
        var options = [0, 1, 2].map(function (d) {
          var g = f[d] + atom.cell[d];
          var shifts = [0];
          if (Math.abs(g) * lengths[d] < BOUNDARY_TOLERANCE) { shifts.push(reps[d]); }
          if (Math.abs(g - reps[d]) * lengths[d] < BOUNDARY_TOLERANCE) { shifts.push(-reps[d]); }
          return shifts;
        });
        options[0].forEach(function (s0) { options[1].forEach(function (s1) { options[2].forEach(function (s2) {
          if (s0 || s1 || s2) { add(atom.site, [atom.cell[0] + s0, atom.cell[1] + s1, atom.cell[2] + s2], false); }
        }); }); });
      });
    }
    return { atoms: atoms, index: index, add: add };
  }

  /* The bonds between drawn atoms, as pairs of atom indices; with `images`, a bond that leaves the drawn atoms
   * brings the periodic image it reaches. */
  function bondsOf(data, drawn, images) {
    var pairs = [], seen = {};
    var bySite = data.frac.map(function () { return []; });
    (data.bonds || []).forEach(function (b) {
      if (!Array.isArray(b) || b.length !== 3 || !bySite[b[0]] || !bySite[b[1]]) { return; }
      bySite[b[0]].push({ other: b[1], shift: b[2] });
      bySite[b[1]].push({ other: b[0], shift: [-b[2][0], -b[2][1], -b[2][2]] });
    });
    var count = drawn.atoms.length;
    for (var a = 0; a < count; a++) {
      var atom = drawn.atoms[a];
      bySite[atom.site].forEach(function (bond) {
        var cell = [atom.cell[0] + bond.shift[0], atom.cell[1] + bond.shift[1], atom.cell[2] + bond.shift[2]];
        var b = drawn.index[keyOf(bond.other, cell)];
        if (b === undefined) {
          if (!images) { return; }
          b = drawn.add(bond.other, cell, true);
        }
        var pair = a < b ? a + "-" + b : b + "-" + a;
        if (!seen[pair]) { seen[pair] = true; pairs.push([a, b]); }
      });
    }
    return pairs;
  }

  function addAtoms(viewer, drawn, pairs) {
    var specs = drawn.atoms.map(function (atom, n) {
      return { elem: atom.elem, x: atom.pos[0], y: atom.pos[1], z: atom.pos[2], index: n, serial: n,
               bonds: [], bondOrder: [], properties: { site: atom.site, cell: atom.cell, image: atom.image } };
    });
    pairs.forEach(function (p) {
      specs[p[0]].bonds.push(p[1]); specs[p[0]].bondOrder.push(1);
      specs[p[1]].bonds.push(p[0]); specs[p[1]].bondOrder.push(1);
    });
    var model = viewer.addModel();
    model.addAtoms(specs);
    return model;
  }

  var AXIS_COLOURS = ["#D55E00", "#009E73", "#0072B2"];

  /* The (super)cell's edges, its a, b and c edges at the origin coloured and labelled. */
  function drawCell(viewer, lattice, reps) {
    var corners = [];
    [0, 1].forEach(function (i) { [0, 1].forEach(function (j) { [0, 1].forEach(function (k) {
      corners.push({ f: [i, j, k], p: cartesian(lattice, [i * reps[0], j * reps[1], k * reps[2]]) });
    }); }); });
    corners.forEach(function (a) {
      corners.forEach(function (b) {
        var diff = [0, 1, 2].filter(function (d) { return a.f[d] !== b.f[d]; });
        if (diff.length === 1 && a.f[diff[0]] === 0) {
          var atOrigin = a.f[0] + a.f[1] + a.f[2] === 0;
          viewer.addCylinder({ start: { x: a.p[0], y: a.p[1], z: a.p[2] }, end: { x: b.p[0], y: b.p[1], z: b.p[2] },
            radius: atOrigin ? 0.06 : 0.04, color: atOrigin ? AXIS_COLOURS[diff[0]] : "#444444", fromCap: 1, toCap: 1 });
        }
      });
    });
    ["a", "b", "c"].forEach(function (name, d) {
      var f = [0, 0, 0];
      f[d] = 1.08;
      var p = cartesian(lattice, f);
      viewer.addLabel(name, { position: { x: p[0], y: p[1], z: p[2] }, fontSize: 16, fontColor: AXIS_COLOURS[d],
        backgroundOpacity: 0, inFront: true, alignment: "center" }, undefined, NO_SHOW);
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
          var len = norm(n) || 1;
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
      fontColor: "black", backgroundColor: "white", backgroundOpacity: 0.7, inFront: true }, undefined, NO_SHOW);
  }

  function drawAtomLabels(viewer, drawn, mode) {
    if (mode !== "element" && mode !== "site") { return; }
    drawn.atoms.slice(0, MAX_LABELS).forEach(function (atom) {
      viewer.addLabel(mode === "element" ? atom.elem : String(atom.site), {
        position: { x: atom.pos[0], y: atom.pos[1], z: atom.pos[2] }, fontSize: 11, fontColor: "black",
        backgroundColor: "white", backgroundOpacity: 0.6, inFront: true, alignment: "center" }, undefined, NO_SHOW);
    });
  }

  /* The picked atoms (the `store-picks` store: [{site, cell}]) of the structure drawn in `element`. */
  function setPicks(picks) {
    if (window.dash_clientside && window.dash_clientside.set_props) {
      window.dash_clientside.set_props("store-picks", { data: picks });
    }
  }

  /* Hover an atom: a label with its site and environment (``labels``: one line per site, from the motif panel or,
   * for an environment, from its payload); click: the same line with its coordinates kept under the viewer, and
   * the atom added to the picks (a fifth pick starts again from one). */
  function pickable(element, viewer, data, labels, drawn) {
    function labelOf(atom) {
      var site = drawn.atoms[atom.index] ? drawn.atoms[atom.index].site : atom.index;
      return labels && labels[site] ? labels[site] : data.species[site] + " " + site;
    }
    viewer.setHoverable({}, true, function (atom, v) {
      if (!atom || atom.hoverLabel) { return; }
      atom.hoverLabel = v.addLabel(labelOf(atom), { position: { x: atom.x, y: atom.y, z: atom.z }, fontSize: 11,
        fontColor: "white", backgroundColor: "black", backgroundOpacity: 0.75, inFront: true }, undefined, NO_SHOW);
      v.render();
    }, function (atom, v) {
      if (atom && atom.hoverLabel) { v.removeLabel(atom.hoverLabel); delete atom.hoverLabel; }  // it renders
    });
    viewer.setClickable({}, true, function (atom) {
      var entry = atom && drawn.atoms[atom.index];
      if (!entry) { return; }
      var box = document.getElementById("viewer-atom");
      if (box && element.id === "viewer") {
        var f = data.frac[entry.site];
        box.textContent = labelOf(atom) + " · fractional (" + f.map(function (v) { return v.toFixed(4); }).join(", ") +
          ") · Cartesian (" + [atom.x, atom.y, atom.z].map(function (v) { return v.toFixed(3); }).join(", ") + ") Å";
        box.setAttribute("data-site", String(entry.site));
      }
      if (element.id !== "viewer" || data.cluster === true) { return; }
      var picks = (element._picks || []).length >= 4 ? [] : (element._picks || []).slice();
      picks.push({ site: entry.site, cell: entry.cell.slice() });
      element._picks = picks;  // now: a second click may come before the store's callback has run
      setPicks(picks);
    });
  }

  /* Rings and numbers on the picked atoms (redrawn whenever the picks change). */
  function showPicks(picks) {
    var element = document.getElementById("viewer");
    var viewer = element && element._viewer;
    if (!viewer || !element._drawn) { return ""; }
    (element._pickShapes || []).forEach(function (s) { viewer.removeShape(s); });
    (element._pickLabels || []).forEach(function (l) { viewer.removeLabel(l); });
    element._pickShapes = [];
    element._pickLabels = [];
    element._picks = Array.isArray(picks) ? picks.slice(0, 4) : [];
    element._picks.forEach(function (pick, n) {
      var atom = element._drawn.index[keyOf(pick.site, pick.cell || [0, 0, 0])];
      var pos = atom !== undefined ? element._drawn.atoms[atom].pos :
        cartesian(element._data.lattice, element._data.frac[pick.site].map(function (v, d) { return v + pick.cell[d]; }));
      element._pickShapes.push(viewer.addSphere({ center: { x: pos[0], y: pos[1], z: pos[2] }, radius: 0.6,
        color: "#CC79A7", opacity: 0.5 }));
      element._pickLabels.push(viewer.addLabel(String(n + 1), { position: { x: pos[0], y: pos[1], z: pos[2] },
        fontSize: 13, fontColor: "white", backgroundColor: "#CC79A7", backgroundOpacity: 0.9, inFront: true },
        undefined, NO_SHOW));
    });
    element.setAttribute("data-picks", String(element._picks.length));
    viewer.render();
    return String(element._picks.length);
  }

  /* Draws `data` into `element` (its own 3Dmol viewer). The camera is kept when the same structure in the same
   * cell is drawn again (another supercell, style or option); a new structure is framed. */
  function draw(element, data, opts) {
    var started = window.performance.now();
    var cluster = data.cluster === true;
    var reps = cluster ? [1, 1, 1] : opts.reps;
    var shapes = cluster ? (Array.isArray(data.polyhedra) ? data.polyhedra : []) : opts.shapes;
    var labels = cluster ? data.sites : opts.labels;
    var drawn = atomsOf(data, reps, !cluster && opts.boundary);
    var pairs = cluster ? [] : bondsOf(data, drawn, opts.images);
    if (!element._viewer) {
      element._viewer = $3Dmol.createViewer(element, { backgroundColor: "white",
        backgroundAlpha: opts.transparent ? 0 : 1 });
    }
    var viewer = element._viewer;
    var key = data.title + "|" + (data.cell || "");
    var keep = element._key === key && !opts.frame ? viewer.getView() : null;
    viewer.removeAllModels();  // not clear(): it renders the emptied scene twice (software WebGL: ~0.3 s a render)
    viewer.removeAllShapes();
    viewer.removeAllLabels();
    if (cluster) {
      viewer.addModel(drawn.atoms.length + "\nenvironment\n" + drawn.atoms.map(function (a) {
        return a.elem + " " + a.pos.map(function (v) { return v.toFixed(6); }).join(" ");
      }).join("\n"), "xyz");
    } else {
      addAtoms(viewer, drawn, pairs);
    }
    viewer.setStyle({}, styleOf(opts.style));
    if (!cluster) {
      viewer.setStyle({ properties: { image: true } }, { sphere: { scale: 0.2, colorscheme: "Jmol", opacity: 0.6 },
        stick: { radius: 0.1, colorscheme: "Jmol", opacity: 0.6 } });
    }
    if (cluster) { drawCentre(viewer, data); } else { drawCell(viewer, data.lattice, reps); }
    drawAtomLabels(viewer, drawn, cluster ? "none" : opts.atomLabels);
    if (opts.pickable !== false) { pickable(element, viewer, data, labels, drawn); }
    var drawnShapes = shapes.length ? drawPolyhedra(viewer, data, reps, shapes) : 0;
    element._key = key;
    element._data = data;
    element._drawn = drawn;
    element._pickShapes = [];
    element._pickLabels = [];
    if (keep) {
      applyView(viewer, keep);
    } else if (cluster) {  // the atoms alone (shapes and labels would widen the frame), turned off the axes
      viewer.zoomTo({ model: viewer.getModel() });
      viewer.rotate(25, "y");
      viewer.rotate(-20, "x");
      viewer.zoom(1.4);
    } else {
      var q = defaultView(data.lattice);
      applyView(viewer, [0, 0, 0, 0, q[0], q[1], q[2], q[3]]);
      viewer.zoomTo();
    }
    viewer.render();
    element.setAttribute("data-polyhedra", String(drawnShapes));
    element.setAttribute("data-cluster", cluster ? "1" : "0");
    element.setAttribute("data-atoms", String(drawn.atoms.length));
    element.setAttribute("data-bonds", String(pairs.length));
    element.setAttribute("data-draw-ms", String(Math.round(window.performance.now() - started)));
    return { atoms: drawn.atoms.length, bonds: pairs.length, polyhedra: drawnShapes, kept: !!keep };
  }

  /* The camera ``view`` (getView's 8 numbers) without a render of its own when 3Dmol.js's groups are reachable
   * (setView renders the scene: the caller renders once at the end). */
  function applyView(viewer, view) {
    var model = viewer.modelGroup, rotation = viewer.rotationGroup;
    if (!model || !rotation || !rotation.quaternion || !model.position) { viewer.setView(view); return; }
    model.position.x = view[0];
    model.position.y = view[1];
    model.position.z = view[2];
    rotation.position.z = view[3];
    rotation.quaternion.x = view[4];
    rotation.quaternion.y = view[5];
    rotation.quaternion.z = view[6];
    rotation.quaternion.w = view[7];
  }

  function optionsOf(supercell, style, polyhedraOn, polyhedra, options, atomLabels, data) {
    var reps = String(supercell || "1x1x1").split("x").map(function (n) {
      return Math.max(1, Math.min(3, parseInt(n, 10) || 1));
    });
    while (reps.length < 3) { reps.push(1); }
    var same = polyhedra && data && polyhedra.title === data.title && polyhedra.cell === data.cell;
    var on = Array.isArray(polyhedraOn) && polyhedraOn.indexOf("on") >= 0;
    var flags = Array.isArray(options) ? options : [];
    return { reps: reps.slice(0, 3), style: style,
             shapes: on && same && Array.isArray(polyhedra.polyhedra) ? polyhedra.polyhedra : [],
             labels: same && Array.isArray(polyhedra.sites) ? polyhedra.sites : null,
             boundary: flags.indexOf("boundary") >= 0, images: flags.indexOf("images") >= 0,
             atomLabels: atomLabels };
  }

  function clearViewer(element) {
    if (element._viewer) { element._viewer.clear(); }
    element._key = null;
    element._data = null;
    element._drawn = null;
    element.setAttribute("data-atoms", "0");
    var legend = document.getElementById("viewer-legend");
    if (legend) { legend.innerHTML = ""; }
  }

  /* The structure's panel text is painted first, the 3D view right after: WebGL rendering can hold the
   * page's only thread for most of a second (software rendering), and the click should not wait for it. */
  function drawStructure(data, supercell, style, polyhedraOn, polyhedra, options, atomLabels) {
    var element = document.getElementById("viewer");
    if (!element || typeof $3Dmol === "undefined") { return "3Dmol.js is not loaded (run `make assets`)"; }
    var ticket = ++pending;
    if (!data) {
      clearViewer(element);
      if (element._picks && element._picks.length) { element._picks = []; setPicks([]); }
      return "";
    }
    var opts = optionsOf(supercell, style, polyhedraOn, polyhedra, options, atomLabels, data);
    window.requestAnimationFrame(function () {
      window.setTimeout(function () {
        if (ticket !== pending) { return; }  // a newer structure came meanwhile
        var newStructure = element._key !== data.title + "|" + (data.cell || "");
        var done = draw(element, data, opts);
        element._opts = opts;
        drawLegend(data.species);
        if (!newStructure) {
          showPicks(element._picks);
        } else if (element._picks && element._picks.length) {  // a new structure: its picks start empty
          element._picks = [];
          setPicks([]);
        }
        var status;
        if (data.cluster === true) {
          status = done.atoms + " atoms drawn (the environment: centre " + data.species[0] + " and " +
            (done.atoms - 1) + " neighbours" + (done.polyhedra ? ", its polyhedron" : "") + "): " + data.title;
        } else {
          status = done.atoms + " atoms drawn, " + done.bonds + " bonds (" + opts.reps.join("×") + " cell)" +
            (opts.shapes.length ? ", " + opts.shapes.length + (opts.shapes.length === 1 ? " polyhedron" :
              " polyhedra") + " per cell" : "") + ": " + data.title;
        }
        window.dash_clientside.set_props("viewer-status", { children: status });
      }, 0);
    });
    return "drawing " + data.title + "…";
  }

  /* The quaternion [x, y, z, w] of the rotation whose rows are the orthonormal `rows` (model to view). */
  function quaternionOf(r) {
    var trace = r[0][0] + r[1][1] + r[2][2], s;
    if (trace > 0) {
      s = 0.5 / Math.sqrt(trace + 1);
      return [(r[2][1] - r[1][2]) * s, (r[0][2] - r[2][0]) * s, (r[1][0] - r[0][1]) * s, 0.25 / s];
    }
    if (r[0][0] > r[1][1] && r[0][0] > r[2][2]) {
      s = 2 * Math.sqrt(1 + r[0][0] - r[1][1] - r[2][2]);
      return [0.25 * s, (r[0][1] + r[1][0]) / s, (r[0][2] + r[2][0]) / s, (r[2][1] - r[1][2]) / s];
    }
    if (r[1][1] > r[2][2]) {
      s = 2 * Math.sqrt(1 + r[1][1] - r[0][0] - r[2][2]);
      return [(r[0][1] + r[1][0]) / s, 0.25 * s, (r[1][2] + r[2][1]) / s, (r[0][2] - r[2][0]) / s];
    }
    s = 2 * Math.sqrt(1 + r[2][2] - r[0][0] - r[1][1]);
    return [(r[0][2] + r[2][0]) / s, (r[1][2] + r[2][1]) / s, 0.25 * s, (r[1][0] - r[0][1]) / s];
  }

  function unit(v) { var n = norm(v) || 1; return [v[0] / n, v[1] / n, v[2] / n]; }

  function cross(u, v) { return [u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]]; }

  /* The rotation that shows the cell looking down axis `d` (0, 1, 2: a, b, c) — that axis points at the viewer —
   * with the next axis (c for a and b, b for c) upwards. */
  function alongAxis(lattice, d) {
    return towards(lattice[d], lattice[d === 2 ? 1 : 2]);
  }

  /* The first view of a crystal: c up, looking down a direction between a and b (a little from above), so the
   * cell's three edges and its depth show. */
  function defaultView(lattice) {
    var a = unit(lattice[0]), b = unit(lattice[1]), c = unit(lattice[2]);
    return towards([0, 1, 2].map(function (k) { return a[k] - 0.35 * b[k] + 0.3 * c[k]; }), lattice[2]);
  }

  /* The rotation that makes `toward` point at the viewer and `up` (its part across `toward`) point up. */
  function towards(toward, up) {
    var z = unit(toward);
    var dot = up[0] * z[0] + up[1] * z[1] + up[2] * z[2];
    var y = unit([up[0] - dot * z[0], up[1] - dot * z[1], up[2] - dot * z[2]]);
    var x = cross(y, z);
    return quaternionOf([x, y, z]);
  }

  /* Buttons "along a / b / c" and "reset": the rotation changes, the zoom and centre stay. */
  function viewAlong() {
    var element = document.getElementById("viewer");
    var viewer = element && element._viewer;
    var triggered = window.dash_clientside.callback_context.triggered_id;
    if (!viewer || !element._data || element._data.cluster === true) { return "show a crystal first"; }
    if (triggered === "view-reset") {
      var first = defaultView(element._data.lattice);
      viewer.setView([0, 0, 0, 0, first[0], first[1], first[2], first[3]]);
      viewer.zoomTo();
      viewer.render();
      return "view reset";
    }
    var d = { "view-a": 0, "view-b": 1, "view-c": 2 }[triggered];
    if (d === undefined) { return window.dash_clientside.no_update; }
    var view = viewer.getView();
    var q = alongAxis(element._data.lattice, d);
    viewer.setView([view[0], view[1], view[2], view[3], q[0], q[1], q[2], q[3]]);
    viewer.render();
    return "looking along " + "abc"[d];
  }

  /* The view as a PNG of `width` x `height` pixels (transparent background on request), drawn again by an
   * off-screen viewer of that size from the same camera, and downloaded. */
  function savePng(n, width, height, transparent) {
    var element = document.getElementById("viewer");
    if (!n) { return window.dash_clientside.no_update; }
    if (!element || !element._viewer || !element._data) { return "show a structure first"; }
    width = Math.round(Number(width));
    height = Math.round(Number(height));
    if (!(width >= 100 && width <= 4000 && height >= 100 && height <= 4000)) {
      return "choose a width and a height between 100 and 4000 pixels";
    }
    var clear = Array.isArray(transparent) && transparent.indexOf("on") >= 0;
    // 3Dmol.js draws at twice the CSS size when antialiasing on a screen of ratio < 2 (else at the screen's
    // ratio): a box of the requested size over that factor gives a canvas of about the requested pixels
    var ratio = Math.max(2, window.devicePixelRatio || 1);
    var host = document.getElementById("png-host");
    if (!host) {
      host = document.createElement("div");
      host.id = "png-host";
      host.style.cssText = "position: fixed; left: -10000px; top: 0;";
      document.body.appendChild(host);
    }
    host.innerHTML = "";
    var box = document.createElement("div");
    box.style.cssText = "position: relative; width: " + width / ratio + "px; height: " + height / ratio + "px;";
    host.appendChild(box);
    var opts = Object.assign({}, element._opts || {}, { transparent: clear, pickable: false, frame: true });
    draw(box, element._data, opts);
    var offscreen = box._viewer;
    offscreen.setView(element._viewer.getView());
    offscreen.render();
    var canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    var context = canvas.getContext("2d");
    if (!clear) { context.fillStyle = "white"; context.fillRect(0, 0, width, height); }
    context.drawImage(offscreen.getCanvas(), 0, 0, width, height);
    var link = document.createElement("a");
    link.href = canvas.toDataURL("image/png");
    link.download = String(element._data.title).replace(/[^A-Za-z0-9_.-]+/g, "_").slice(0, 80) + ".png";
    document.body.appendChild(link);
    link.click();
    link.remove();
    host.innerHTML = "";  // the context goes with its canvas
    return "saved " + link.download + " (" + width + "×" + height + " pixels" + (clear ? ", transparent" : "") + ")";
  }

  /* The compare view: the two structures of the `store-compare` store in two viewers whose cameras move
   * together. */
  function drawCompare(pair) {
    var left = document.getElementById("compare-left"), right = document.getElementById("compare-right");
    if (!left || !right || typeof $3Dmol === "undefined") { return ""; }
    if (!pair || !pair.left || !pair.right) {
      [left, right].forEach(function (e) { if (e._viewer) { e._viewer.clear(); e._viewer.render(); } });
      return "";
    }
    var opts = { reps: [1, 1, 1], style: "ball-and-stick", shapes: [], labels: null, boundary: true, images: false,
                 atomLabels: "none", pickable: false, frame: true };
    draw(left, pair.left, opts);
    draw(right, pair.right, opts);
    if (!left._synced) {  // rotations follow each other; each keeps its own centre and zoom
      var syncing = false;
      [[left, right], [right, left]].forEach(function (ends) {
        ends[0]._viewer.setViewChangeCallback(function (view) {
          if (syncing || !ends[1]._viewer) { return; }
          syncing = true;
          var other = ends[1]._viewer.getView();
          ends[1]._viewer.setView([other[0], other[1], other[2], other[3], view[4], view[5], view[6], view[7]], true);
          syncing = false;
        });
      });
      left._synced = true;
    }
    right.setAttribute("data-title", pair.right.title);
    left.setAttribute("data-title", pair.left.title);
    return "2";
  }

  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    explorer: { drawStructure: drawStructure, showPicks: showPicks, viewAlong: viewAlong, savePng: savePng,
                drawCompare: drawCompare }
  });
})();
