// Runs before the first paint (a classic script, not a module): applies the
// theme chosen with the toggle; without a choice, CSS follows
// prefers-color-scheme.
(function () {
  try {
    var t = localStorage.getItem('perch-theme');
    if (t === 'light' || t === 'dark') document.documentElement.dataset.theme = t;
  } catch (e) { /* storage disabled: automatic theme */ }
})();
