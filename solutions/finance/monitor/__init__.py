"""`solutions.finance.monitor`: a crash-safe risk monitor over a stream of finance news and posts.

Read a stream (sources; each line a `lines.Line`), find which companies each document mentions
(entities), score its sentiment in batches, store everything in SQLite (store), aggregate per
entity and time window (aggregate), fire alerts (rules), deliver them (sinks); `loop.run_monitor`
ties these together and `report` draws the HTML page. No module loads torch at import time (nor
redis or psycopg, the [scale] extra): the classifier is loaded by the loop when it starts.
"""
