// Reports: the print button (the print stylesheet in ui.css hides navigation and controls).
(function () {
  "use strict";
  const b = document.getElementById("print");
  if (b) b.addEventListener("click", function () { window.print(); });
})();
