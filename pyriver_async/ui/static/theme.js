// Runs in <head>, before the first paint: the chosen theme (auto, light, dark) is on
// <html> before anything is drawn, so a dark page never flashes white.
(function () {
  var root = document.documentElement;
  var theme = "auto";
  try {
    theme = window.localStorage.getItem("pyr-theme") || "auto";
  } catch (e) {
    theme = "auto";
  }
  if (theme !== "light" && theme !== "dark") theme = "auto";
  root.setAttribute("data-theme", theme);
  root.classList.add("js");
})();
