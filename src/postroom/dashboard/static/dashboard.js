// postroom dashboard: a few lines of progressive enhancement; every page works without.
"use strict";
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-confirm]");
  if (button && !window.confirm(button.dataset.confirm)) event.preventDefault();
});
document.addEventListener("submit", (event) => {
  const verb = event.target.querySelector("select[name=verb]");
  if (verb && verb.value === "delete" && !window.confirm("Delete the selected messages for good?")) {
    event.preventDefault();
  }
});
document.addEventListener("change", (event) => {
  if (!event.target.matches("[data-select-all]")) return;
  for (const box of document.querySelectorAll("input[name=id][form=bulk]")) {
    box.checked = event.target.checked;
  }
});
