"""The report stage: a `Summary` in, report.html, report.md, report.json, figures and per-image exports out.

`write.write_report` writes everything; each section's tables have a module of their own, rendered by the HTML
and Markdown page writers through the same table callable (`cells`).
"""
