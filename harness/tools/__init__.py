"""Commands that use the methods rather than being methods: choosing ICR's heads
(``select-heads``), calibrating STELLA (``stella-calibrate``) and bringing an old run folder to
the current format (``upgrade``). Each builds rerankers or re-prepares runs, so it stands above
the methods, the results and the runner; nothing below imports a tool."""
