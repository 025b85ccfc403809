//! REST routes from `google.api.http` annotations: path templates, captures and query
//! parameters mapped onto the request message.

use http::Method;
use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, Value};

use super::{JsonGateway, Target};
use crate::Status;

/// One `google.api.http` binding.
pub(super) struct RestRoute {
    pub(super) verb: Method,
    pub(super) template: Vec<Segment>,
    /// `"*"` (the whole body), a field name, or empty (no body).
    pub(super) body: String,
    pub(super) target: Target,
}

#[derive(Debug, PartialEq)]
pub(super) enum Segment {
    Literal(String),
    /// `*`: any one segment, not captured.
    Any,
    /// `{field}` or `{field=*}`: one segment captured into a field path.
    Capture(String),
}

impl JsonGateway {
    pub(super) fn add_rule(&mut self, rule: &DynamicMessage, target: &Target) {
        let text = |name: &str| match rule.get_field_by_name(name).as_deref() {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        for (verb, field) in [
            (Method::GET, "get"),
            (Method::PUT, "put"),
            (Method::POST, "post"),
            (Method::DELETE, "delete"),
            (Method::PATCH, "patch"),
        ] {
            let path = text(field);
            if path.is_empty() {
                continue;
            }
            match parse_template(&path) {
                Some(template) => self.routes.push(RestRoute {
                    verb,
                    template,
                    body: text("body"),
                    target: target.clone(),
                }),
                None => tracing::warn!(
                    method = target.method.full_name(),
                    "ignoring unsupported google.api.http path template {path:?}"
                ),
            }
        }
        if let Some(Value::List(more)) = rule.get_field_by_name("additional_bindings").as_deref() {
            for binding in more {
                if let Value::Message(binding) = binding {
                    self.add_rule(binding, target);
                }
            }
        }
    }
}

pub(super) fn parse_template(path: &str) -> Option<Vec<Segment>> {
    let rest = path.strip_prefix('/')?;
    rest.split('/')
        .map(|segment| {
            if segment == "*" {
                Some(Segment::Any)
            } else if let Some(inner) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}'))
            {
                let field = inner.strip_suffix("=*").unwrap_or(inner);
                (!field.is_empty() && !field.contains(['=', '*', '/']))
                    .then(|| Segment::Capture(field.to_owned()))
            } else if segment.is_empty() || segment.contains(['{', '}', '*']) {
                None
            } else {
                Some(Segment::Literal(segment.to_owned()))
            }
        })
        .collect()
}

/// Matches `path` against `template`, returning the captured `(field path, value)` pairs.
pub(super) fn match_template(template: &[Segment], path: &str) -> Option<Vec<(String, String)>> {
    let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    if segments.len() != template.len() {
        return None;
    }
    let mut captures = Vec::new();
    for (pattern, segment) in template.iter().zip(segments) {
        match pattern {
            Segment::Literal(lit) if lit == segment => {}
            Segment::Literal(_) => return None,
            Segment::Any if !segment.is_empty() => {}
            Segment::Capture(field) if !segment.is_empty() => {
                let value = percent_encoding::percent_decode_str(segment)
                    .decode_utf8_lossy()
                    .into_owned();
                captures.push((field.clone(), value));
            }
            Segment::Any | Segment::Capture(_) => return None,
        }
    }
    Some(captures)
}

pub(super) fn url_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

/// Sets `a.b.c` in a JSON object, turning text into the field's JSON type where needed.
pub(super) fn set_path(
    object: &mut serde_json::Map<String, serde_json::Value>,
    desc: &MessageDescriptor,
    path: &str,
    value: serde_json::Value,
) -> Result<(), Status> {
    let (head, rest) = match path.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (path, None),
    };
    let field = desc
        .get_field_by_name(head)
        .or_else(|| desc.get_field_by_json_name(head))
        .ok_or_else(|| {
            Status::invalid_argument(format!("{} has no field {head:?}", desc.full_name()))
        })?;
    let key = field.json_name().to_owned();
    match rest {
        Some(rest) => {
            let Kind::Message(inner) = field.kind() else {
                return Err(Status::invalid_argument(format!(
                    "{head:?} in {path:?} is not a message field"
                )));
            };
            let entry = object
                .entry(key)
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
            match entry {
                serde_json::Value::Object(map) => set_path(map, &inner, rest, value),
                _ => Err(Status::invalid_argument(format!("{head:?} is set twice"))),
            }
        }
        None => {
            let value = match (&value, field.kind()) {
                (serde_json::Value::String(text), Kind::Bool) => match text.as_str() {
                    "true" => serde_json::Value::Bool(true),
                    "false" => serde_json::Value::Bool(false),
                    _ => value,
                },
                (serde_json::Value::String(text), Kind::Double | Kind::Float) => text
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(value, serde_json::Value::Number),
                _ => value,
            };
            let value = if field.is_list() && !value.is_array() {
                serde_json::Value::Array(vec![value])
            } else {
                value
            };
            match (object.get_mut(&key), value) {
                (Some(serde_json::Value::Array(list)), serde_json::Value::Array(more)) => {
                    list.extend(more);
                }
                (_, value) => {
                    object.insert(key, value);
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_and_match() {
        let t = parse_template("/v1/shelves/{shelf}/books/{book.id=*}").unwrap();
        assert_eq!(
            match_template(&t, "/v1/shelves/7/books/a%20b"),
            Some(vec![
                ("shelf".to_owned(), "7".to_owned()),
                ("book.id".to_owned(), "a b".to_owned())
            ])
        );
        assert_eq!(match_template(&t, "/v1/shelves/7/books"), None);
        assert_eq!(match_template(&t, "/v1/shelves//books/1"), None);
        assert_eq!(
            match_template(&parse_template("/add").unwrap(), "/add"),
            Some(vec![])
        );
        assert!(parse_template("add").is_none());
        assert!(parse_template("/v1/{name=shelves/**}").is_none());
    }
}
