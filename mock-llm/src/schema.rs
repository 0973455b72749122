//! The smallest value a JSON Schema accepts, as the mock builds tool inputs and
//! structured answers.

use serde_json::{Map, Value, json};

/// How deep the builder follows nested schemas (and `$ref`s) before giving up with
/// `null`: recursive schemas end there.
const MAX_DEPTH: usize = 32;
/// The most items the builder puts in an array to meet its `minItems`.
const MAX_ITEMS: u64 = 16;

/// A small value that `schema` accepts, built deterministically:
///
/// - `const` → that value; `enum` → its first value;
/// - `anyOf` / `oneOf` → the value of the first choice; `allOf` → the values of every
///   part, objects merged;
/// - `$ref` to `#/$defs/…` or `#/definitions/…` → the value of the referenced schema;
/// - by `type` (the first that is not `"null"` when it is a list): `"string"` → `"x"`
///   (repeated up to `minLength`), `"integer"` → `1` and `"number"` → `1.0` (moved
///   into `minimum`/`maximum`), `"boolean"` → `true`, `"null"` → `null`, `"array"` →
///   `[]` (or `minItems` copies of its `items`' value), `"object"` → every `required`
///   property, each with its own schema's value (`null` for one without a schema);
/// - no `type`: an object when the schema has `properties`, else `null`.
///
/// ```
/// use serde_json::json;
/// let schema = json!({"type": "object", "required": ["q", "n", "tags", "mode"],
///     "properties": {"q": {"type": "string"}, "n": {"type": "integer"},
///         "tags": {"type": "array", "items": {"type": "string"}},
///         "mode": {"enum": ["fast", "slow"]}, "optional": {"type": "boolean"}}});
/// assert_eq!(cf_mock_llm::value_for_schema(&schema),
///     json!({"q": "x", "n": 1, "tags": [], "mode": "fast"}));
/// ```
pub fn value_for_schema(schema: &Value) -> Value {
    build(schema, schema, 0)
}

/// [`value_for_schema`], but always an object (`{}` when the schema's value is not
/// one): tool inputs and structured answers are objects.
pub(crate) fn object_for_schema(schema: &Value) -> Value {
    match value_for_schema(schema) {
        object @ Value::Object(_) => object,
        _ => Value::Object(Map::new()),
    }
}

fn build(schema: &Value, root: &Value, depth: usize) -> Value {
    let Some(s) = schema.as_object() else {
        return Value::Null;
    };
    if depth > MAX_DEPTH {
        return Value::Null;
    }
    let next = |sub: &Value| build(sub, root, depth + 1);
    if let Some(value) = s.get("const") {
        return value.clone();
    }
    if let Some(values) = s.get("enum").and_then(Value::as_array) {
        return values.first().cloned().unwrap_or(Value::Null);
    }
    if let Some(target) = s.get("$ref").and_then(Value::as_str) {
        return target
            .strip_prefix('#')
            .and_then(|pointer| root.pointer(pointer))
            .map_or(Value::Null, next);
    }
    for choice in ["anyOf", "oneOf"] {
        if let Some(first) = s
            .get(choice)
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        {
            return next(first);
        }
    }
    if let Some(parts) = s.get("allOf").and_then(Value::as_array) {
        let mut merged = Map::new();
        for part in parts {
            match next(part) {
                Value::Object(fields) => merged.extend(fields),
                other => return other,
            }
        }
        return Value::Object(merged);
    }
    let kind = match s.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if s.contains_key("properties") => "object",
        _ => return Value::Null,
    };
    match kind {
        "string" => {
            let len = s.get("minLength").and_then(Value::as_u64).unwrap_or(1);
            Value::String("x".repeat(usize::try_from(len.clamp(1, 1024)).unwrap_or(1)))
        }
        "integer" => {
            let mut n = 1i64;
            if let Some(min) = s.get("minimum").and_then(Value::as_i64) {
                n = n.max(min);
            }
            if let Some(max) = s.get("maximum").and_then(Value::as_i64) {
                n = n.min(max);
            }
            json!(n)
        }
        "number" => {
            let mut n = 1.0f64;
            if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
                n = n.max(min);
            }
            if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
                n = n.min(max);
            }
            json!(n)
        }
        "boolean" => Value::Bool(true),
        "array" => {
            let count = s.get("minItems").and_then(Value::as_u64).unwrap_or(0);
            let item = s.get("items").map_or(Value::Null, next);
            Value::Array((0..count.min(MAX_ITEMS)).map(|_| item.clone()).collect())
        }
        "object" => {
            let properties = s.get("properties").and_then(Value::as_object);
            let required = s.get("required").and_then(Value::as_array);
            let fields = required
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|name| {
                    let value = properties
                        .and_then(|p| p.get(name))
                        .map_or(Value::Null, next);
                    (name.to_owned(), value)
                })
                .collect();
            Value::Object(fields)
        }
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_gets_its_minimal_value() {
        let schema = json!({"type": "object",
            "required": ["s", "i", "n", "b", "a", "o", "e", "c", "nullable", "untyped"],
            "properties": {
                "s": {"type": "string"}, "i": {"type": "integer"}, "n": {"type": "number"},
                "b": {"type": "boolean"}, "a": {"type": "array", "items": {"type": "integer"}},
                "o": {"type": "object", "required": ["inner"],
                      "properties": {"inner": {"type": "string", "minLength": 3}}},
                "e": {"type": "string", "enum": ["first", "second"]},
                "c": {"const": 7}, "nullable": {"type": ["null", "integer"]},
                "untyped": {},
                "not_required": {"type": "string"}}});
        assert_eq!(
            value_for_schema(&schema),
            json!({"s": "x", "i": 1, "n": 1.0, "b": true, "a": [], "o": {"inner": "xxx"},
                "e": "first", "c": 7, "nullable": 1, "untyped": null})
        );
    }

    #[test]
    fn bounds_refs_and_combinators_are_followed() {
        let schema = json!({"type": "object", "required": ["age", "ratio", "pair", "ref", "any", "all"],
            "$defs": {"Point": {"type": "object", "required": ["x"], "properties": {"x": {"type": "number"}}}},
            "properties": {
                "age": {"type": "integer", "minimum": 18},
                "ratio": {"type": "number", "maximum": 0.5},
                "pair": {"type": "array", "minItems": 2, "items": {"type": "boolean"}},
                "ref": {"$ref": "#/$defs/Point"},
                "any": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                "all": {"allOf": [{"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}},
                                  {"type": "object", "required": ["b"], "properties": {"b": {"type": "boolean"}}}]}}});
        assert_eq!(
            value_for_schema(&schema),
            json!({"age": 18, "ratio": 0.5, "pair": [true, true], "ref": {"x": 1.0},
                "any": "x", "all": {"a": 1, "b": true}})
        );
    }

    #[test]
    fn a_recursive_schema_ends_and_a_non_object_schema_gives_an_empty_object() {
        let schema = json!({"$ref": "#", "type": "object"});
        assert_eq!(value_for_schema(&schema), Value::Null);
        assert_eq!(object_for_schema(&json!({"type": "string"})), json!({}));
        let tree = json!({"type": "object", "required": ["child"],
            "properties": {"child": {"$ref": "#"}}});
        let v = value_for_schema(&tree);
        assert!(v.pointer("/child/child/child").is_some(), "{v}");
    }
}
