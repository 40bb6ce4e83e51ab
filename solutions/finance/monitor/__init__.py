"""`solutions.finance.monitor`: a crash-safe risk monitor over a stream of finance news and posts.

Read a stream (sources), find which companies each document mentions (entities), score its
sentiment in batches, store everything in SQLite (store), aggregate per entity and time window
(aggregate), fire alerts (rules), deliver them (sinks); `loop.run_monitor` ties these together
and `report` draws the HTML page. Every module imports only the standard library and numpy at
load time; the classifier is loaded by the loop.
"""
