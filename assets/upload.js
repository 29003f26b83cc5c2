/* The upload box drops files over its size limit before Dash sees them (dcc.Upload's max_size): say so in
 * words instead of doing nothing. The limit is read from the message box's data-max-bytes attribute. */
(function () {
  "use strict";

  function refuseLarge(files) {
    var box = document.getElementById("upload-error");
    var limit = box ? Number(box.getAttribute("data-max-bytes")) : 0;
    if (!box || !limit || !files) {
      return;
    }
    Array.prototype.forEach.call(files, function (file) {
      if (file.size > limit) {
        box.textContent = "Upload refused: " + file.name + " is " + (file.size / 1e6).toFixed(1) +
          " MB, more than the limit of " + limit / 1e6 + " MB.";
      }
    });
  }

  function inUpload(target) {
    return target && target.closest && target.closest("#upload");
  }

  document.addEventListener("change", function (event) {
    if (inUpload(event.target)) {
      refuseLarge(event.target.files);
    }
  }, true);
  document.addEventListener("drop", function (event) {
    if (inUpload(event.target)) {
      refuseLarge(event.dataTransfer && event.dataTransfer.files);
    }
  }, true);
})();
