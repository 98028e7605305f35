# make demo: train on the project's own shapes (default config), mesh one, evaluate both (~3 min on 2 cores)
# make test: lint and run the test suite
# Both create and fill .venv when it is missing.
PY := .venv/bin/python
VENV_STAMP := .venv/.installed

.PHONY: demo test clean

$(VENV_STAMP): requirements.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $(VENV_STAMP)

demo: $(VENV_STAMP)
	test -f data/shapes/torus.obj -a -f data/shapes/dumbbell.obj || $(PY) data/make_shapes.py
	$(PY) train_series.py --mesh-dir data/shapes --config configs/default.yaml --arch keysphere --out runs/demo/keysphere
	$(PY) modelmesher.py --model runs/demo/keysphere/torus/model.ksdf --res 128 --out runs/demo/torus.obj
	$(PY) eval.py --mesh-dir data/shapes --results runs/demo/keysphere --csv runs/demo/eval.csv

test: $(VENV_STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q tests

clean:
	rm -rf runs/demo .cache
