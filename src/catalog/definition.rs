//! An event type as the API defines it: the `PUT /v1/event-types/{name}`
//! body checked and compiled (schemas against their draft's meta-schema,
//! samples against their schema), and the JSON a type is shown as.

use std::collections::BTreeMap;

use jsonschema::{PatternOptions, Validator};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::CatalogEntry;
use crate::clock;
use crate::events::{self, Invalid, MAX_DATA_VERSION, MAX_DATA_VERSIONS};
use crate::store::records::{EventTypeRecord, EventTypeVersion};

const MAX_DESCRIPTION_LEN: usize = 4096;
/// Error messages quote schema text; this keeps an answer readable.
const MAX_MESSAGE_LEN: usize = 300;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TypeInput<'a> {
    #[serde(default)]
    description: Option<String>,
    #[serde(borrow)]
    versions: BTreeMap<String, VersionInput<'a>>,
    #[serde(default)]
    deprecated: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionInput<'a> {
    #[serde(default, borrow)]
    schema: Option<&'a RawValue>,
    #[serde(borrow)]
    sample: &'a RawValue,
}

/// Why a definition was refused.
#[derive(Debug)]
pub enum Refused {
    /// Not the shape of a definition, or a field breaking a rule.
    Invalid(Invalid),
    /// A schema that is not a valid JSON Schema or does not compile here.
    Schema { pointer: String, message: String },
    /// A sample its own version's schema refuses.
    Sample { pointer: String, message: String },
}

impl From<Invalid> for Refused {
    fn from(e: Invalid) -> Self {
        Refused::Invalid(e)
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> Refused {
    Refused::Invalid(Invalid::Field {
        field,
        message: message.into(),
    })
}

pub(super) fn shorten(message: &str) -> String {
    if message.len() <= MAX_MESSAGE_LEN {
        return message.to_owned();
    }
    let mut end = MAX_MESSAGE_LEN;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

/// Compiles a schema the way every catalogued schema is: references
/// resolve only inside the schema itself (nothing is ever fetched), and
/// `pattern` uses a linear-time regex engine, so no event can make a
/// validation backtrack for long.
/// Nodes a schema may have with its references expanded. Ingest runs the
/// validator on every event, and a subschema referenced from both sides of
/// each of N nested `anyOf`s is tried 2^N times: a schema of a kilobyte
/// could hold a request for seconds. Real schemas stay far below this.
const MAX_EXPANDED_NODES: usize = 10_000;

/// Nesting deeper than this, references followed included, is refused.
const MAX_SCHEMA_DEPTH: usize = 64;

/// Keywords whose values are data, not subschemas.
const DATA_KEYWORDS: [&str; 5] = ["const", "enum", "default", "examples", "description"];

/// Refuses a schema whose validation could cost more than
/// `MAX_EXPANDED_NODES` steps per instance node: every local `$ref` is
/// expanded where it stands, except one already being expanded on the way
/// there (recursion follows the instance, whose size the body limit caps).
/// References the walk cannot follow (other documents, anchors, nested
/// `$id`s, dynamic references) are refused, so none escapes the count.
fn check_expansion(root: &Value) -> Result<(), String> {
    fn walk<'a>(
        root: &'a Value,
        node: &'a Value,
        expanding: &mut Vec<&'a str>,
        count: &mut usize,
        depth: usize,
    ) -> Result<(), String> {
        *count += 1;
        if *count > MAX_EXPANDED_NODES {
            return Err(format!(
                "the schema is too large with its references expanded (over {MAX_EXPANDED_NODES} nodes), so checking an event against it could take too long"
            ));
        }
        if depth > MAX_SCHEMA_DEPTH {
            return Err(format!(
                "the schema nests deeper than {MAX_SCHEMA_DEPTH} levels"
            ));
        }
        match node {
            Value::Object(map) => {
                for keyword in ["$dynamicRef", "$recursiveRef", "$anchor", "$dynamicAnchor"] {
                    if map.contains_key(keyword) {
                        return Err(format!("`{keyword}` is not supported; use `$ref` to `#/…`"));
                    }
                }
                if depth > 0 && map.contains_key("$id") {
                    return Err("`$id` is only allowed at the schema's top".to_owned());
                }
                if let Some(reference) = map.get("$ref") {
                    let reference = reference.as_str().unwrap_or_default();
                    let pointer = reference
                        .strip_prefix('#')
                        .filter(|p| p.is_empty() || p.starts_with('/'))
                        .ok_or_else(|| {
                            let shown: String = reference.chars().take(60).collect();
                            format!("`$ref: {shown}`: only references within the schema (`#/…`) are supported")
                        })?;
                    if !expanding.contains(&reference) {
                        let target = root.pointer(pointer).ok_or_else(|| {
                            let shown: String = reference.chars().take(60).collect();
                            format!("`$ref: {shown}` names nothing in the schema")
                        })?;
                        expanding.push(reference);
                        walk(root, target, expanding, count, depth + 1)?;
                        expanding.pop();
                    }
                }
                for (key, value) in map {
                    if !DATA_KEYWORDS.contains(&key.as_str()) {
                        walk(root, value, expanding, count, depth + 1)?;
                    }
                }
            }
            Value::Array(items) => {
                for item in items {
                    walk(root, item, expanding, count, depth + 1)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
    walk(root, root, &mut Vec::new(), &mut 0, 0)
}

fn compile(schema: &Value) -> Result<Validator, jsonschema::ValidationError<'static>> {
    jsonschema::options()
        .offline()
        .with_pattern_options(PatternOptions::regex())
        .build(schema)
}

/// The type `body` defines, compiled, stamped `now_ms` (its creation time
/// is the caller's to keep when it replaces one).
pub fn parse(body: &[u8], now_ms: i64) -> Result<CatalogEntry, Refused> {
    let input: TypeInput = events::from_json_object(body)?;
    let description = input.description.unwrap_or_default();
    if description.len() > MAX_DESCRIPTION_LEN {
        return Err(invalid(
            "description",
            format!("longer than {MAX_DESCRIPTION_LEN} bytes"),
        ));
    }
    if input.versions.is_empty() || input.versions.len() > MAX_DATA_VERSIONS {
        return Err(invalid(
            "versions",
            format!("must define 1 to {MAX_DATA_VERSIONS} versions"),
        ));
    }
    let mut versions = Vec::with_capacity(input.versions.len());
    let mut validators = Vec::new();
    for (name, given) in &input.versions {
        let version = events::parse_version(name).ok_or_else(|| {
            let shown: String = name.chars().take(16).collect();
            invalid(
                "versions",
                format!("`{shown}` is not a version: use \"1\" to \"{MAX_DATA_VERSION}\""),
            )
        })?;
        let sample_text = given.sample.get();
        if !sample_text.starts_with('{') {
            return Err(Refused::Sample {
                pointer: format!("/versions/{version}/sample"),
                message: "a sample is an event's data: a JSON object".to_owned(),
            });
        }
        let schema_text = given.schema.map(RawValue::get).filter(|s| *s != "null");
        if let Some(text) = schema_text {
            let pointer = format!("/versions/{version}/schema");
            let schema: Value = serde_json::from_str(text).map_err(|e| Refused::Schema {
                pointer: pointer.clone(),
                message: e.to_string(),
            })?;
            if !schema.is_object() && !schema.is_boolean() {
                return Err(Refused::Schema {
                    pointer,
                    message: "a JSON Schema is an object or a boolean".to_owned(),
                });
            }
            check_expansion(&schema).map_err(|message| Refused::Schema {
                pointer: pointer.clone(),
                message,
            })?;
            let validator = compile(&schema).map_err(|e| Refused::Schema {
                pointer: format!("{pointer}{}", e.instance_path().as_str()),
                message: shorten(&e.to_string()),
            })?;
            let sample: Value = serde_json::from_str(sample_text).map_err(|e| Refused::Sample {
                pointer: format!("/versions/{version}/sample"),
                message: e.to_string(),
            })?;
            if let Some(e) = validator.iter_errors(&sample).next() {
                return Err(Refused::Sample {
                    pointer: format!("/versions/{version}/sample{}", e.instance_path().as_str()),
                    message: shorten(&e.masked().to_string()),
                });
            }
            validators.push((version, validator));
        }
        versions.push(EventTypeVersion {
            version,
            schema: schema_text.map(str::to_owned),
            sample: sample_text.to_owned(),
        });
    }
    versions.sort_by_key(|v| v.version);
    Ok(CatalogEntry {
        record: EventTypeRecord {
            description,
            versions,
            deprecated: input.deprecated,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
        },
        validators,
    })
}

/// A stored type compiled again (at start). On a schema that does not
/// compile, the entry without that version's validator and the problem.
pub fn entry_of(record: EventTypeRecord) -> Result<CatalogEntry, (CatalogEntry, String)> {
    let mut validators = Vec::new();
    let mut problem = None;
    for version in &record.versions {
        let Some(text) = &version.schema else {
            continue;
        };
        let compiled = serde_json::from_str::<Value>(text)
            .map_err(|e| e.to_string())
            .and_then(|schema| compile(&schema).map_err(|e| e.to_string()));
        match compiled {
            Ok(validator) => validators.push((version.version, validator)),
            Err(e) => problem = Some(format!("version {}: {}", version.version, shorten(&e))),
        }
    }
    let entry = CatalogEntry { record, validators };
    match problem {
        None => Ok(entry),
        Some(problem) => Err((entry, problem)),
    }
}

/// A type as answers show it.
pub fn to_json(name: &str, record: &EventTypeRecord) -> Value {
    let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
    let versions: serde_json::Map<String, Value> = record
        .versions
        .iter()
        .map(|v| {
            (
                v.version.to_string(),
                json!({
                    "schema": v.schema.as_deref().map_or(Value::Null, parse),
                    "sample": parse(&v.sample),
                }),
            )
        })
        .collect();
    json!({
        "name": name,
        "description": record.description,
        "deprecated": record.deprecated,
        "versions": versions,
        "created_at": clock::format_rfc3339(record.created_at_ms),
        "updated_at": clock::format_rfc3339(record.updated_at_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: Value) -> Refused {
        match parse(body.to_string().as_bytes(), 0) {
            Err(e) => e,
            Ok(_) => panic!("{body} was accepted"),
        }
    }

    #[test]
    fn a_definition_is_stored_with_its_versions_in_order() {
        let entry = parse(
            json!({"description": "paid", "versions": {
                "10": {"sample": {"b": 1}},
                "2": {"schema": {"type": "object"}, "sample": {"a": 1}},
            }})
            .to_string()
            .as_bytes(),
            5,
        )
        .unwrap();
        let numbers: Vec<u32> = entry.record.versions.iter().map(|v| v.version).collect();
        assert_eq!(numbers, [2, 10]);
        assert_eq!(entry.validators.len(), 1);
        assert_eq!(entry.record.created_at_ms, 5);
        let shown = to_json("invoice.paid", &entry.record);
        assert_eq!(shown["versions"]["2"]["schema"], json!({"type": "object"}));
        assert_eq!(shown["versions"]["10"]["schema"], Value::Null);
        assert_eq!(shown["versions"]["10"]["sample"], json!({"b": 1}));
    }

    #[test]
    fn bad_schemas_and_samples_are_refused_naming_where() {
        let schema_at = |body: Value| match refused(body) {
            Refused::Schema { pointer, message } => (pointer, message),
            other => panic!("{other:?}"),
        };
        let (pointer, _) = schema_at(json!({"versions": {"1": {
            "schema": {"type": "integer-ish"}, "sample": {}}}}));
        assert!(pointer.starts_with("/versions/1/schema"), "{pointer}");
        let (pointer, message) = schema_at(json!({"versions": {"1": {
            "schema": {"$ref": "https://example.com/s.json"}, "sample": {}}}}));
        assert_eq!(pointer, "/versions/1/schema");
        assert!(message.contains("example.com"), "{message}");
        schema_at(
            json!({"versions": {"1": {"schema": {"type": "string", "pattern": "(?=a)"},
            "sample": {}}}}),
        );
        schema_at(json!({"versions": {"1": {"schema": 5, "sample": {}}}}));

        match refused(json!({"versions": {"3": {
            "schema": {"properties": {"n": {"type": "integer"}}}, "sample": {"n": "x"}}}}))
        {
            Refused::Sample { pointer, .. } => assert_eq!(pointer, "/versions/3/sample/n"),
            other => panic!("{other:?}"),
        }
        match refused(json!({"versions": {"1": {"sample": [1]}}})) {
            Refused::Sample { pointer, .. } => assert_eq!(pointer, "/versions/1/sample"),
            other => panic!("{other:?}"),
        }
        for (body, want) in [
            (json!({"versions": {}}), "versions"),
            (json!({"versions": {"one": {"sample": {}}}}), "versions"),
            (
                json!({"versions": {"1": {"sample": {}}}, "description": "x".repeat(5000)}),
                "description",
            ),
        ] {
            match refused(body.clone()) {
                Refused::Invalid(Invalid::Field { field, .. }) => assert_eq!(field, want, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
        for body in [
            json!({"versions": {"1": {}}}),
            json!({"versions": {"1": {"sample": {}}}, "extra": 1}),
            json!({"description": "no versions"}),
        ] {
            assert!(matches!(refused(body), Refused::Invalid(Invalid::Shape(_))));
        }
    }

    fn schema_problem(schema: Value) -> Option<String> {
        let body = json!({"versions": {"1": {"schema": schema, "sample": {"ok": 1}}}});
        match parse(body.to_string().as_bytes(), 0) {
            Ok(_) => None,
            Err(Refused::Schema { message, .. }) => Some(message),
            Err(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn schemas_whose_expansion_could_take_exponential_time_are_refused() {
        // Each level refers to the next from four branches of an `anyOf`:
        // an event without `ok` would be tried 4^12 times.
        let mut defs = serde_json::Map::new();
        for level in 0..12 {
            let next = json!({"$ref": format!("#/$defs/a{}", level + 1)});
            defs.insert(format!("a{level}"), json!({"anyOf": vec![next; 4]}));
        }
        defs.insert("a12".into(), json!({"type": "string"}));
        let hostile =
            json!({"$defs": defs, "anyOf": [{"required": ["ok"]}, {"$ref": "#/$defs/a0"}]});
        let refused = schema_problem(hostile).expect("refused");
        assert!(refused.contains("too large"), "{refused}");

        // A recursive tree and shared definitions used a few times are fine.
        let tree = json!({"$defs": {"node": {"type": "object", "properties": {
            "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}},
            "$ref": "#/$defs/node"});
        assert_eq!(schema_problem(tree), None);
        let shared = json!({"$defs": {"money": {"type": "integer", "minimum": 0}},
            "properties": {"amount": {"$ref": "#/$defs/money"}, "tax": {"$ref": "#/$defs/money"}}});
        assert_eq!(schema_problem(shared), None);

        for (schema, says) in [
            (
                json!({"$ref": "https://example.com/s.json"}),
                "only references",
            ),
            (json!({"$ref": "#/$defs/missing"}), "names nothing"),
            (
                json!({"properties": {"a": {"$id": "x", "type": "string"}}}),
                "$id",
            ),
            (json!({"$dynamicRef": "#x"}), "$dynamicRef"),
        ] {
            let refused = schema_problem(schema.clone()).unwrap_or_else(|| panic!("{schema}"));
            assert!(refused.contains(says), "{schema}: {refused}");
        }
    }

    #[test]
    fn a_schema_referring_to_itself_validates_without_running_away() {
        let entry = parse(
            json!({"versions": {"1": {"schema": {"$ref": "#"}, "sample": {}}}})
                .to_string()
                .as_bytes(),
            0,
        );
        if let Ok(entry) = entry {
            let catalog = super::super::Catalog::default();
            catalog.put("a", std::sync::Arc::new(entry));
            assert!(catalog.check("a", [(1, "{}")]).is_ok());
        }
    }
}
