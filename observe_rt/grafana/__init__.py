"""Grafana dashboards of observe-rt: reading, linting, checking against Prometheus, pictures.

dashboard.py   the classic JSON model: panels, targets, variables, substitution
lint.py        static checks (ids, grid, data source, variables)
prometheus.py  HTTP API client; Debian's prometheus run on loopback with deploy's config
check.py       every panel query through a real Prometheus (python -m observe_rt.grafana)
pictures.py    PNG renderings of the panels from the same Prometheus (matplotlib, optional)
"""
