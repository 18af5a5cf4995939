"""The ops page (page.html): one self-contained HTML file served at GET /ops."""
