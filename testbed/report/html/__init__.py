"""HTML reports: a run page (heat map of failure rates, every case's progress, a filterable case table),
a page per case (verdict, reasons, mechanism, timeline panels on one time axis with phases, fault
windows and the stall, blocked tasks, evidence files), and a comparison page. Self-contained folders
(plotly.js copied in once), made from what the case folders hold."""
