//! JSON claims → `google.protobuf.Struct`, for ValidateJWTSVID's `claims`
//! (SPEC §3.1).

use prost_types::value::Kind;
use serde_json::{Map, Value};

/// Converts a JSON object into a protobuf `Struct`.
pub fn to_struct(map: Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map.into_iter().map(|(k, v)| (k, to_value(v))).collect(),
    }
}

/// Converts any JSON value; numbers become doubles, as protobuf has no other
/// number kind (`exp`/`iat` stay exact below 2^53).
pub fn to_value(v: Value) -> prost_types::Value {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.into_iter().map(to_value).collect(),
        }),
        Value::Object(o) => Kind::StructValue(to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// The inverse, for printing validated claims: integral doubles print as
/// integers.
pub fn from_struct(s: &prost_types::Struct) -> Map<String, Value> {
    s.fields
        .iter()
        .map(|(k, v)| (k.clone(), from_value(v)))
        .collect()
}

fn from_value(v: &prost_types::Value) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) => number(*n),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(from_value).collect()),
        Some(Kind::StructValue(s)) => Value::Object(from_struct(s)),
    }
}

fn number(n: f64) -> Value {
    // Exact integers (such as timestamps) print without a fraction.
    const MAX_EXACT: f64 = 9_007_199_254_740_992.0;
    if n.fract() == 0.0 && n.abs() <= MAX_EXACT {
        #[expect(clippy::cast_possible_truncation, reason = "integral and within ±2^53")]
        return Value::from(n as i64);
    }
    serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn claims_round_trip() {
        let v = json!({"sub": "spiffe://td/w", "aud": ["a", "b"], "exp": 1_700_000_000u64,
            "x": {"n": null, "t": true, "f": 1.5}});
        let Value::Object(m) = v.clone() else {
            unreachable!()
        };
        assert_eq!(Value::Object(from_struct(&to_struct(m))), v);
    }

    proptest! {
        #[test]
        fn integers_and_strings_round_trip(n in -(1i64 << 53)..(1i64 << 53), s in ".*") {
            let mut m = Map::new();
            m.insert("n".into(), Value::from(n));
            m.insert("s".into(), Value::from(s));
            prop_assert_eq!(from_struct(&to_struct(m.clone())), m);
        }
    }
}
