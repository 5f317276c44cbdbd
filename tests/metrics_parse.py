"""Reads a Prometheus text exposition on stdin with the reference parser
(prometheus_client) and prints its samples as JSON lines:
{"family", "type", "name", "labels", "value"}. A text the parser refuses
exits non-zero with its complaint on stderr."""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    text = sys.stdin.read()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            print(json.dumps({
                "family": family.name,
                "type": family.type,
                "help": family.documentation,
                "name": sample.name,
                "labels": sample.labels,
                "value": sample.value,
            }))


if __name__ == "__main__":
    main()
