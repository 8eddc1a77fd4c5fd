"""Background responses (``background: true``): queued in the store, run by consumer processes off a task
queue, followed and cancelled from any worker or host through the store.

``service`` is the request side (submit, read, follow, cancel) and the queue, ``events`` the events as plain
values, ``consumer`` the side that runs them (consumer processes only), ``supervisor`` the consumers that
gunicorn's master keeps running. This module imports nothing, so that the master can import the supervisor
without the HTTP stack (gevent's workers must find ssl unimported).
"""
