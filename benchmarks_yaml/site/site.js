// Sortable tables: click a heading to sort by that column (numbers by value, text alphabetically; empty last).
"use strict";
document.querySelectorAll("table.sortable").forEach((table) => {
  const headings = table.querySelectorAll("thead th");
  headings.forEach((heading, column) => {
    heading.addEventListener("click", () => {
      const ascending = !heading.classList.contains("sorted-ascending");
      headings.forEach((h) => h.classList.remove("sorted-ascending", "sorted-descending"));
      heading.classList.add(ascending ? "sorted-ascending" : "sorted-descending");
      const body = table.tBodies[0];
      const rows = Array.from(body.rows);
      const key = (row) => {
        const cell = row.cells[column];
        return cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent.trim();
      };
      rows.sort((a, b) => {
        const x = key(a), y = key(b);
        if (x === "" || y === "") return (x === "") - (y === "");
        const nx = Number(x), ny = Number(y);
        const order = !Number.isNaN(nx) && !Number.isNaN(ny) ? nx - ny : x.localeCompare(y);
        return ascending ? order : -order;
      });
      rows.forEach((row) => body.appendChild(row));
    });
  });
});
