"""The forkserver benchmark (``python -m bench``, ``make bench``).

Loads forkserver, nginx, gunicorn and ``python -m http.server`` side by side with
wrk on loopback, with the same worker count, and reports requests per second,
throughput, latency and memory as a markdown table, targets as ratios to nginx,
``docs/benchmarks.md`` and a chart. A measurement tool, never a test: nothing
here asserts a speed.

Modules: ``cli`` (flags), ``runner`` (the sequence), ``prerequisites`` (apt/pip
installs), ``docroot`` (the files served), ``servers`` (configure, start),
``serverprocess`` (launch, readiness, docroot check, stop),
``gunicorn_app`` (the WSGI comparison app), ``load`` (wrk), ``memory`` (PSS
sampler), ``cpu`` (who used the CPUs), ``processes`` (process trees), ``machine``
(what ran it), ``measured`` (the result model of a run), ``tables`` (the classic
cases' tables), ``targets`` (targets and verdicts), ``observations`` (CPU split,
interference, incidents, experiments against itself), ``report`` (the markdown and
console text), ``chart`` (the PNG), ``profiler`` (py-spy flamegraphs).
"""
