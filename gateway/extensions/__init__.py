"""Extensions: features that change what a turn is or does, each one module, plugged into the pipeline.

An extension is an object with any of these methods; the pipeline calls them in the order ``services.py``
lists the extensions, and skips the ones an extension does not have:

- ``before(ctx, turn, targets) -> Reply | None``: once per create, after resolve and route, before any
  target is tried. May answer early (a finished Reply: the turn goes no further).
- ``plan(ctx, turn, plan, finish) -> Reply | None``: per target, once the pipeline planned what it is sent.
  May change the plan, or answer for the target (``finish`` keeps a response it makes, as the adapter's
  would be kept).
- ``wants(ctx, turn) -> bool`` and ``around(ctx, turn, targets, run, record) -> (Reply, Target)``: ``around``
  wraps the attempt stage of the creates ``wants`` says (asked first, and cheaply: every create asks). ``run(turn)`` is
  the stage (every target, with retries and fallback) for a turn, which the extension may change or call
  several times (a tool loop); ``record(target)`` is the finish of a response the extension makes itself.
  The first listed is the outermost.

``ctx`` is the create's ``call.Context`` (the components, the caller, the request's headers, the trace).
Adding an extension is one module here and one line in ``services.py``; an extension never imports another.
"""
