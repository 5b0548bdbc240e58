"""Istio objects against cloudcoil's pydantic models with unknown fields forbidden.

usage: istio_strict.py FILE...

The @kubernetes-models validator cannot see unknown fields (its ajv schemas allow additional
properties), so a misspelt `wieght` would pass it and be silently ignored by istiod. cloudcoil's
models reject them once `extra = "forbid"` is set on their base model, which must happen before any
model module is imported (the models copy the config when their classes are created).
"""

import cloudcoil.pydantic as cp

cp.BaseModel.model_config["extra"] = "forbid"

import importlib  # noqa: E402  (must follow the config change above)
import sys  # noqa: E402

import pydantic  # noqa: E402
import yaml  # noqa: E402


def model_for(api_version: str, kind: str):
    group, _, version = api_version.rpartition("/")
    area = group.split(".")[0]  # networking / security / telemetry / extensions
    try:
        module = importlib.import_module(f"cloudcoil.models.istio.{area}.{version}")
    except ImportError:
        return None
    return getattr(module, kind, None)


def main() -> int:
    bad = n = 0
    for f in sys.argv[1:]:
        with open(f, encoding="utf-8") as fh:
            for obj in yaml.safe_load_all(fh):
                if not isinstance(obj, dict) or not str(obj.get("apiVersion", "")).split("/")[0].endswith(".istio.io"):
                    continue
                n += 1
                meta = obj.get("metadata") or {}
                ident = f"{obj['kind']}/{meta.get('namespace', 'default')}/{meta.get('name')} ({obj['apiVersion']})"
                model = model_for(obj["apiVersion"], obj["kind"])
                if model is None:
                    bad += 1
                    print(f"UNKNOWN {ident}: no cloudcoil model")
                    continue
                try:
                    model.model_validate(obj, strict=True)
                    print(f"ok      {ident}")
                except pydantic.ValidationError as e:
                    bad += 1
                    errors = "\n  ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
                    print(f"INVALID {ident}\n  {errors}")
    print(f"{n - bad} passed, {bad} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
