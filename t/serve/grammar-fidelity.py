"""grammar-fidelity.py URL KEY MODEL SEEDS: constrained sampling under several JSON Schemas.

For each schema, SEEDS seeded requests with random sampling (temperature 1, the choices of a
request drawn from seed, seed+1, ...) through response_format json_schema; every output must
parse and validate (python3-jsonschema, with its format checker) and end with finish_reason
"stop".  Prints one line per schema and exits non-zero on the first invalid output.
"""
import concurrent.futures
import json
import sys
import urllib.request

import jsonschema

url, key, model, n_seeds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
N = 8  # choices per request: they are generated in one batch

SCHEMAS = {
    "nested": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 8},
            "age": {"type": "integer", "minimum": 0, "maximum": 130},
            "address": {
                "type": "object",
                "properties": {"city": {"type": "string", "minLength": 1, "maxLength": 6},
                               "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                "required": ["city", "zip"], "additionalProperties": False,
            },
            "active": {"type": "boolean"},
        },
        "required": ["name", "age", "address", "active"], "additionalProperties": False,
    },
    "arrays": {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "minItems": 1, "maxItems": 3},
            "scores": {"type": "array", "items": {"type": "integer", "minimum": -5, "maximum": 5},
                       "minItems": 2, "maxItems": 4},
            "pair": {"type": "array", "prefixItems": [{"type": "boolean"}, {"type": "null"}], "items": False,
                     "minItems": 2},
        },
        "required": ["tags", "scores", "pair"], "additionalProperties": False,
    },
    "enums": {
        "type": "object",
        "properties": {
            "color": {"enum": ["red", "green", "blue"]},
            "size": {"type": "string", "enum": ["S", "M", "L", "XL"]},
            "version": {"const": 2},
            "note": {"type": ["string", "null"], "maxLength": 6},
            "day": {"type": "string", "format": "date"},
            "id": {"type": "string", "format": "uuid"},
        },
        "required": ["color", "size", "version", "note", "day", "id"], "additionalProperties": False,
    },
    "ref": {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"v": {"type": "integer", "minimum": 0, "maximum": 9},
                               "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2}},
                "required": ["v"], "additionalProperties": False,
            },
        },
        "type": "object",
        "properties": {"root": {"$ref": "#/$defs/node"},
                       "label": {"anyOf": [{"type": "string", "maxLength": 4}, {"type": "integer", "minimum": 0,
                                                                                 "maximum": 99}]}},
        "required": ["root", "label"], "additionalProperties": False,
    },
}


def request(schema_name, seed):
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Give me a JSON object."}],
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": schema_name, "schema": SCHEMAS[schema_name], "strict": True}},
        "temperature": 1.0, "seed": seed, "n": N, "max_tokens": 600,
    }
    req = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", "Authorization": "Bearer " + key})
    with urllib.request.urlopen(req, timeout=300) as r:
        return seed, json.load(r)


failed = 0
for name, schema in SCHEMAS.items():
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    n_ok = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for seed, answer in pool.map(lambda s: request(name, s), range(0, n_seeds, N)):
            for c in answer["choices"]:
                text = c["message"]["content"]
                try:
                    if c["finish_reason"] != "stop":
                        raise ValueError("finish_reason " + c["finish_reason"])
                    validator.validate(json.loads(text))
                    n_ok += 1
                except Exception as e:  # noqa: BLE001 - any failure is reported the same way
                    failed += 1
                    print("INVALID %s seed %d choice %d: %s\n%s" % (name, seed, c["index"], e, text))
    print("%s: %d/%d valid" % (name, n_ok, n_seeds))
sys.exit(1 if failed else 0)
