(function () {
  "use strict";
  // Filtering: every <select data-filter=KEY> must match the row's data-KEY; the text box
  // matches anywhere in the row.
  var table = document.getElementById("claims-table");
  var count = document.getElementById("claims-shown");
  var controls = Array.prototype.slice.call(document.querySelectorAll("[data-filter]"));
  var search = document.getElementById("claims-search");
  function applyFilters() {
    if (!table) { return; }
    var rows = table.tBodies[0].rows, shown = 0, needle = search ? search.value.toLowerCase() : "";
    for (var i = 0; i < rows.length; i++) {
      var row = rows[i], ok = true;
      controls.forEach(function (c) {
        if (c.value && row.getAttribute("data-" + c.getAttribute("data-filter")) !== c.value) {
          ok = false;
        }
      });
      if (ok && needle && row.textContent.toLowerCase().indexOf(needle) < 0) { ok = false; }
      row.hidden = !ok;
      if (ok) { shown++; }
    }
    if (count) { count.textContent = shown + " of " + rows.length + " shown"; }
  }
  controls.forEach(function (c) { c.addEventListener("change", applyFilters); });
  if (search) { search.addEventListener("input", applyFilters); }
  applyFilters();

  // Sorting: click a header; numbers compare as numbers, text naturally (g2 before g16).
  var collator = new Intl.Collator(undefined, {numeric: true, sensitivity: "base"});
  function value(cell) {
    return cell.hasAttribute("data-v") ? cell.getAttribute("data-v") : cell.textContent.trim();
  }
  document.querySelectorAll("table.sortable").forEach(function (tbl) {
    var heads = tbl.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      th.classList.add("sortable");
      th.setAttribute("tabindex", "0");
      function sort() {
        var asc = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var body = tbl.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        var numeric = th.getAttribute("data-type") === "num";
        rows.sort(function (a, b) {
          var x = value(a.cells[col]), y = value(b.cells[col]), d;
          if (numeric) {
            var fx = parseFloat(x), fy = parseFloat(y);
            fx = isNaN(fx) ? -Infinity : fx; fy = isNaN(fy) ? -Infinity : fy;
            d = fx === fy ? 0 : (fx < fy ? -1 : 1);
          } else {
            d = collator.compare(x, y);
          }
          return asc ? d : -d;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      }
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (e) { if (e.key === "Enter") { sort(); } });
    });
  });

  // Figures: click to open at full size (scrollable); click again or Esc to close.
  var box = document.getElementById("lightbox");
  if (box) {
    var big = box.querySelector("img"), cap = box.querySelector("p");
    document.querySelectorAll("figure img").forEach(function (img) {
      img.addEventListener("click", function () {
        big.src = img.src;
        big.alt = img.alt;
        cap.textContent = img.alt + " (full size; click or Esc to close)";
        box.showModal();
      });
    });
    box.addEventListener("click", function () { box.close(); });
  }
}());
