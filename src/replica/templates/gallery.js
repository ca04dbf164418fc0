// The gallery's index and coverage page: search, filters and sort, with their state in the URL
// (index.html?theme=...&status=...&q=...&sort=...) so that a view can be shared. Plain DOM code:
// it runs from file:// with no network and no framework.
"use strict";

// The page's state <-> its query string. replaceState keeps the history clean; some browsers
// refuse it on file:// URLs, and then the page still works, only without a shareable URL.
function readState(keys) {
  var params = new URLSearchParams(window.location.search), state = {};
  keys.forEach(function (key) { state[key] = params.get(key) || ""; });
  return state;
}

function writeState(state, defaults) {
  var params = new URLSearchParams();
  Object.keys(state).forEach(function (key) {
    if (state[key] && state[key] !== defaults[key]) { params.set(key, state[key]); }
  });
  var query = params.toString();
  var url = (query ? "?" + query : window.location.pathname) + window.location.hash;
  try {
    window.history.replaceState(null, "", url);
  } catch (err) { /* file:// in a browser that forbids it: state stays in the page */ }
}

// Every whitespace-separated term of the query must occur in the item's search text.
function matchesQuery(item, query) {
  var text = item.dataset.search || "";
  return query.toLowerCase().split(/\s+/).every(function (term) {
    return !term || text.indexOf(term) !== -1;
  });
}

// A select keeps a value only if it has that option (a stale or hand-edited URL).
function setSelect(select, value) {
  var known = Array.prototype.some.call(select.options, function (o) { return o.value === value; });
  select.value = known ? value : select.options[0].value;
}

// Sort keys of the index: how two items compare, each with its direction.
var SORT_KEYS = {
  theme: function (a, b) {
    return a.dataset.theme.localeCompare(b.dataset.theme) || num(a, "order") - num(b, "order");
  },
  status: function (a, b) { return num(a, "statusRank") - num(b, "statusRank"); },
  margin: function (a, b) { return absOrLast(a, "margin") - absOrLast(b, "margin"); },
  robustness: function (a, b) { return numOrLast(a, "robustness") - numOrLast(b, "robustness"); },
  runtime: function (a, b) { return num(b, "runtime") - num(a, "runtime"); },
  year: function (a, b) { return num(b, "year") - num(a, "year"); },
  slug: function (a, b) { return a.dataset.slug.localeCompare(b.dataset.slug); }
};

function num(item, key) { return parseFloat(item.dataset[key]); }
function numOrLast(item, key) {
  var v = num(item, key);
  return isNaN(v) ? Infinity : v;
}
function absOrLast(item, key) { return Math.abs(numOrLast(item, key)); }

function sortChildren(container, selector, compare) {
  var items = Array.prototype.slice.call(container.querySelectorAll(selector));
  items.sort(function (a, b) {
    return compare(a, b) || a.dataset.slug.localeCompare(b.dataset.slug);
  });
  items.forEach(function (item) { container.appendChild(item); });
}

function replicaIndex() {
  var search = document.getElementById("q");
  var theme = document.getElementById("filter-theme");
  var status = document.getElementById("filter-status");
  var sort = document.getElementById("sort");
  var shown = document.getElementById("shown");
  var forest = document.querySelector(".forest-rows");
  var cards = document.querySelector(".cards");
  var defaults = { q: "", theme: "", status: "", sort: sort.options[0].value };

  function themeRow(head, extra) {  // the first forest row of a heading's theme
    return Array.prototype.find.call(forest.querySelectorAll(".forest-row" + extra), function (r) {
      return r.dataset.theme === head.dataset.theme;
    }) || null;
  }

  function state() {
    return { q: search.value.trim(), theme: theme.value, status: status.value, sort: sort.value };
  }

  function apply() {
    var s = state(), n = 0;
    var compare = SORT_KEYS[s.sort] || SORT_KEYS.theme;
    sortChildren(cards, ".card", compare);
    sortChildren(forest, ".forest-row", compare);
    if (s.sort === "theme") {  // grouped: each theme's heading above its first row
      forest.querySelectorAll(".forest-theme").forEach(function (head) {
        forest.insertBefore(head, themeRow(head, ""));
      });
    }
    document.querySelectorAll(".item").forEach(function (item) {
      var ok = (!s.theme || item.dataset.theme === s.theme) &&
               (!s.status || item.dataset.status === s.status) && matchesQuery(item, s.q);
      item.classList.toggle("hidden", !ok);
      if (ok && item.classList.contains("card")) { n += 1; }
    });
    forest.querySelectorAll(".forest-theme").forEach(function (head) {
      head.classList.toggle("hidden", !(s.sort === "theme" && themeRow(head, ":not(.hidden)")));
    });
    document.querySelectorAll(".status-count").forEach(function (button) {
      button.setAttribute("aria-pressed", String(button.dataset.status === s.status));
    });
    shown.textContent = n + " of " + cards.querySelectorAll(".card").length + " shown";
    writeState(s, defaults);
  }

  var initial = readState(Object.keys(defaults));
  search.value = initial.q;
  setSelect(theme, initial.theme);
  setSelect(status, initial.status);
  setSelect(sort, initial.sort || defaults.sort);
  search.addEventListener("input", apply);
  [theme, status, sort].forEach(function (el) { el.addEventListener("change", apply); });
  document.querySelectorAll(".status-count").forEach(function (button) {
    button.addEventListener("click", function () {  // a count filters; pressed again, it clears
      status.value = status.value === button.dataset.status ? "" : button.dataset.status;
      apply();
    });
  });
  document.getElementById("reset").addEventListener("click", function () {
    search.value = ""; theme.value = ""; status.value = ""; sort.value = defaults.sort;
    apply();
  });
  document.querySelectorAll("button.copy").forEach(function (button) {
    button.addEventListener("click", function () { copyCommand(button); });
  });
  apply();
}

// The clipboard API where the browser allows it (file:// often does not), else a selection.
function copyCommand(button) {
  var text = button.dataset.command;
  function done(ok) {
    button.textContent = ok ? "copied" : "select and copy";
    button.dataset.copied = ok ? "yes" : "no";
  }
  function fallback() {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (err) { ok = false; }
    document.body.removeChild(area);
    done(ok);
  }
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(function () { done(true); }, fallback);
  } else {
    fallback();
  }
}

// The coverage page: the same search, and every column sortable by a click on its header.
function replicaCoverage() {
  var search = document.getElementById("q");
  var table = document.querySelector("table.list");
  var body = table.tBodies[0];
  var shown = document.getElementById("shown");
  var defaults = { q: "", sort: "", dir: "" };
  var current = { column: "", dir: "" };

  function apply() {
    var n = 0, query = search.value.trim();
    Array.prototype.forEach.call(body.rows, function (row) {
      var ok = matchesQuery(row, query);
      row.classList.toggle("hidden", !ok);
      if (ok) { n += 1; }
    });
    shown.textContent = n + " of " + body.rows.length + " papers shown";
    writeState({ q: query, sort: current.column, dir: current.dir }, defaults);
  }

  function sortBy(column, dir) {
    var index = -1;
    table.querySelectorAll("th").forEach(function (th, i) {
      var active = th.dataset.key === column;
      if (active) { index = i; }
      th.setAttribute("aria-sort", active ? (dir === "desc" ? "descending" : "ascending") : "none");
    });
    if (index < 0) { return; }
    current = { column: column, dir: dir };
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[index].dataset.value || a.cells[index].textContent.trim();
      var y = b.cells[index].dataset.value || b.cells[index].textContent.trim();
      var c = isNaN(x) || isNaN(y) ? x.localeCompare(y) : parseFloat(x) - parseFloat(y);
      return dir === "desc" ? -c : c;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }

  table.querySelectorAll("th button").forEach(function (button) {
    button.addEventListener("click", function () {
      var key = button.parentElement.dataset.key;
      sortBy(key, current.column === key && current.dir !== "desc" ? "desc" : "asc");
      apply();
    });
  });
  var initial = readState(Object.keys(defaults));
  search.value = initial.q;
  if (initial.sort) { sortBy(initial.sort, initial.dir === "desc" ? "desc" : "asc"); }
  search.addEventListener("input", apply);
  apply();
}
