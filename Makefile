# The two commands of the README: `make demo` (the main job) and `make test` (all tests).
# Each does its own set-up (Debian packages + venv) first; set-up is quick when done already.
VENV := .venv
PY := $(VENV)/bin/python
STATE ?= /var/lib/stackha

.PHONY: setup demo test unit lab-tests bench clean

setup:
	./scripts/setup.sh

demo: setup
	$(VENV)/bin/stackha demo

test: setup
	$(PY) -m pytest -ra tests

unit: setup
	$(PY) -m pytest -ra tests/unit

lab-tests: setup
	$(PY) -m pytest -ra tests/lab

bench: setup
	$(PY) bench/lab.py
