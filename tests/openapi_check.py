"""Checks Herald's OpenAPI document and real answers against it.

stdin: {"document": {...}, "answers": [{"path": template, "method": "get",
"status": 200, "content_type": "...", "body": <JSON or null>}]}; path
"*" for an answer no route gave (404, 405), checked as the API's error.
The document is validated against the OpenAPI 3.1 meta-schema
(openapi-spec-validator); each answer's body against the schema the
document gives for its route and status (jsonschema, draft 2020-12, as
OpenAPI 3.1 uses). A 2xx must be listed under its own status; errors may
fall to `default`. Prints one JSON line per problem; exits 1 if any."""

import json
import sys

from jsonschema import Draft202012Validator
from openapi_spec_validator import validate


def media_of(content_type):
    return (content_type or "").split(";")[0].strip().lower()


def check(document, answer):
    if answer["path"] == "*":
        # No row serves it (404, 405): it must still be the API's error.
        operation = {"responses": {"default": {"content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Error"}}}}}}
    else:
        operation = document["paths"].get(answer["path"], {}).get(answer["method"])
    if operation is None:
        return f"no operation {answer['method']} {answer['path']}"
    status = str(answer["status"])
    responses = operation["responses"]
    response = responses.get(status)
    if response is None:
        if status.startswith("2"):
            return f"status {status} is not documented"
        response = responses.get("default")
        if response is None:
            return f"status {status} is not documented and there is no default"
    content = response.get("content")
    got = media_of(answer.get("content_type"))
    if not content:
        if answer.get("body") not in (None, ""):
            return f"status {status} documents no body but one came"
        return None
    documented = {media_of(m): m for m in content}
    if got not in documented:
        return f"status {status}: media {got!r} is not one of {sorted(documented)}"
    schema = content[documented[got]].get("schema")
    if schema is None or got != "application/json":
        return None
    root = dict(schema)
    root["components"] = document.get("components", {})
    errors = sorted(
        Draft202012Validator(root).iter_errors(answer["body"]),
        key=lambda e: list(e.absolute_path),
    )
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path)
        return f"status {status}: at /{where}: {e.message}"
    return None


def main():
    given = json.load(sys.stdin)
    document = given["document"]
    problems = []
    try:
        validate(document)
    except Exception as e:  # the validator's own error types vary by version
        problems.append({"where": "document", "problem": str(e)[:2000]})
    for answer in given["answers"]:
        problem = check(document, answer)
        if problem:
            problems.append({
                "where": f"{answer['method'].upper()} {answer['path']} {answer['status']}",
                "problem": problem[:2000],
            })
    for p in problems:
        print(json.dumps(p))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
