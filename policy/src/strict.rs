//! Reading YAML or JSON into a JSON value the way the API server would
//! take it: a key given twice, a number that is not finite (`.nan`, `.inf`)
//! and a key that is not a string are refused, instead of the last key
//! quietly winning or a bad number quietly becoming "absent". Input is
//! bounded before parsing: size, and nesting (a deep flow collection costs
//! the YAML parser quadratic time).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// The largest manifest or pods file read.
pub const MAX_FILE: u64 = 8 << 20;
/// Deeper than any real manifest (a NetworkPolicy is about 8 levels).
pub const MAX_DEPTH: usize = 64;

/// A JSON value read strictly.
pub struct Strict(pub Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON-compatible value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v).map(Value::Number).ok_or_else(|| E::custom(format!("{v} is not a finite number")))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Strict::deserialize(d).map(|s| s.0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(Strict(k)) = map.next_key()? {
            let Value::String(k) = k else {
                return Err(de::Error::custom(format!("a key that is not a string: {k}")));
            };
            let Strict(v) = map.next_value()?;
            if out.insert(k.clone(), v).is_some() {
                return Err(de::Error::custom(format!("key {k:?} is given twice")));
            }
        }
        Ok(Value::Object(out))
    }
}

/// Refuses text nested deeper than [`MAX_DEPTH`] flow brackets (counted
/// outside quotes, roughly: enough to stop the pathological case cheaply).
pub fn check_depth(text: &str) -> Result<(), String> {
    let (mut depth, mut max) = (0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in text.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' => quote = Some(c),
                '{' | '[' => {
                    depth += 1;
                    max = max.max(depth);
                }
                '}' | ']' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        if max > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
    }
    Ok(())
}

/// Reads a regular file of at most [`MAX_FILE`] bytes, without a BOM.
pub fn read_file(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE + 1).read_to_string(&mut text))
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_FILE {
        return Err(format!("larger than {MAX_FILE} bytes"));
    }
    Ok(text.strip_prefix('\u{feff}').map(str::to_owned).unwrap_or(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(t: &str) -> Result<Value, String> {
        serde_yaml_ng::from_str::<Strict>(t).map(|s| s.0).map_err(|e| e.to_string())
    }

    #[test]
    fn duplicates_non_finite_numbers_and_depth_are_refused() {
        assert!(yaml("a: 1\nb: [x, {c: 2}]\n").is_ok());
        assert!(yaml("a: 1\na: 2\n").unwrap_err().contains("given twice"));
        assert!(yaml("a: .nan\n").unwrap_err().contains("not a finite number"));
        assert!(yaml("a: -.inf\n").is_err());
        let json: Result<Strict, _> = serde_json::from_str(r#"{"a":1,"a":2}"#);
        assert!(json.is_err());
        assert!(check_depth(&format!("a: {}", "{a: ".repeat(100))).is_err());
        assert!(check_depth("a: \"{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{\"").is_ok());
    }
}
