//! YAML with positions: parse with saphyr and turn the tree into a `serde_json::Value` plus an
//! index from JSON Pointer to source span, so every later check can point at the exact node.
//!
//! We convert `MarkedYaml` ourselves instead of going through a serde bridge: YAML 1.2 scalars
//! must keep their meaning (`on` stays a string, `010` an integer) and spans must survive.

use std::collections::HashMap;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
use serde_json::{Map, Number, Value};

use crate::diagnostics::{Code, Diagnostic, SourceFile, Span};

/// Where a node sits in the source: its value and, for mapping entries, its key.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeSpan {
    /// The node itself, cut to its first line.
    pub value: Span,
    pub key: Option<Span>,
    /// Byte offset just past the whole node (block scalars span several lines).
    pub end: usize,
}

/// JSON Pointer (RFC 6901, escaped) to the span of the node it names.
#[derive(Debug, Default)]
pub struct SpanIndex {
    spans: HashMap<String, NodeSpan>,
}

impl SpanIndex {
    pub fn get(&self, pointer: &str) -> Option<NodeSpan> {
        self.spans.get(pointer).copied()
    }

    /// Span of the value at `pointer`, or of the nearest ancestor that has one.
    pub fn value(&self, pointer: &str) -> Span {
        let mut p = pointer;
        loop {
            if let Some(s) = self.spans.get(p) {
                return s.value;
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return Span::default(),
            }
        }
    }

    /// Span of the key of a mapping entry at `pointer` (its value when there is no key).
    pub fn key(&self, pointer: &str) -> Span {
        match self.spans.get(pointer) {
            Some(NodeSpan { key: Some(k), .. }) => *k,
            _ => self.value(pointer),
        }
    }
}

/// Append one escaped reference token to a JSON Pointer.
pub fn pointer_push(base: &str, token: &str) -> String {
    let mut out = String::with_capacity(base.len() + token.len() + 1);
    out.push_str(base);
    out.push('/');
    for c in token.chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            c => out.push(c),
        }
    }
    out
}

/// A parsed YAML document.
#[derive(Debug)]
pub struct Document {
    pub value: Value,
    pub spans: SpanIndex,
}

/// Maps saphyr's character offsets to byte offsets.
struct Offsets<'a> {
    text: &'a str,
    /// Byte offset of each character; empty when the text is ASCII (then they are equal).
    char_starts: Vec<usize>,
}

impl<'a> Offsets<'a> {
    fn new(text: &'a str) -> Self {
        let char_starts = if text.is_ascii() {
            Vec::new()
        } else {
            text.char_indices().map(|(i, _)| i).collect()
        };
        Self { text, char_starts }
    }

    fn byte(&self, char_index: usize) -> usize {
        if self.char_starts.is_empty() {
            char_index.min(self.text.len())
        } else {
            self.char_starts
                .get(char_index)
                .copied()
                .unwrap_or(self.text.len())
        }
    }

    /// A span for a node: its own extent when it stays on one line, otherwise the rest of its
    /// first line (a caret under a whole block mapping helps nobody).
    fn span(&self, start: saphyr::Marker, end: saphyr::Marker) -> Span {
        let start = self.byte(start.index());
        let end = self.byte(end.index()).max(start);
        let line_end = self.text[start..]
            .find(['\n', '\r'])
            .map_or(self.text.len(), |i| start + i);
        let mut end = end.min(line_end);
        // Trailing blanks and comments are not part of the node.
        while end > start && self.text.as_bytes()[end - 1].is_ascii_whitespace() {
            end -= 1;
        }
        if end == start {
            end = (start + 1).min(line_end.max(start));
        }
        Span::new(start, end - start)
    }
}

/// Parse one YAML document. Syntax errors come back as one diagnostic with its position.
pub fn parse(file: &SourceFile) -> Result<Document, Diagnostic> {
    let text: &str = &file.text;
    let offsets = Offsets::new(text);
    let docs = MarkedYaml::load_from_str(text).map_err(|e| {
        let start = offsets.byte(e.marker().index());
        let len = usize::from(start < text.len());
        Diagnostic::new(
            Code::YamlSyntax,
            Span::new(start, len),
            format!("invalid YAML: {}", e.info()),
        )
        .with_label("here")
    })?;
    let mut docs = docs.into_iter();
    let Some(root) = docs.next() else {
        return Err(Diagnostic::new(
            Code::NotAMapping,
            Span::new(0, 0),
            "the file is empty: a workflow definition is a YAML mapping with `id` and `steps`",
        ));
    };
    if let Some(second) = docs.next() {
        let span = offsets.span(second.span.start, second.span.end);
        return Err(Diagnostic::new(
            Code::YamlSyntax,
            span,
            "a file holds one workflow definition, but this is a second YAML document",
        )
        .with_label("second document")
        .with_help("move it to a file of its own"));
    }
    let mut spans = SpanIndex::default();
    let mut errors = Vec::new();
    let value = convert(
        &root,
        String::new(),
        None,
        &offsets,
        &mut spans,
        &mut errors,
        0,
    );
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    Ok(Document { value, spans })
}

/// Nesting beyond this is refused rather than risking the stack on hostile input.
const MAX_DEPTH: usize = 128;

fn convert(
    node: &MarkedYaml<'_>,
    pointer: String,
    key: Option<Span>,
    offsets: &Offsets<'_>,
    spans: &mut SpanIndex,
    errors: &mut Vec<Diagnostic>,
    depth: usize,
) -> Value {
    let span = offsets.span(node.span.start, node.span.end);
    if depth > MAX_DEPTH {
        errors.push(Diagnostic::new(
            Code::YamlSyntax,
            span,
            format!("the document nests deeper than {MAX_DEPTH} levels"),
        ));
        return Value::Null;
    }
    let value = match &node.data {
        YamlData::Value(s) => scalar(s),
        YamlData::Representation(raw, _, _) => Value::String(raw.to_string()),
        YamlData::Tagged(_, inner) => {
            return convert(inner, pointer, key, offsets, spans, errors, depth + 1);
        }
        YamlData::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let p = pointer_push(&pointer, &i.to_string());
                out.push(convert(item, p, None, offsets, spans, errors, depth + 1));
            }
            Value::Array(out)
        }
        YamlData::Mapping(map) => {
            let mut out = Map::with_capacity(map.len());
            for (k, v) in map {
                let key_span = offsets.span(k.span.start, k.span.end);
                let Some(name) = key_string(k) else {
                    errors.push(
                        Diagnostic::new(
                            Code::YamlSyntax,
                            key_span,
                            "mapping keys must be plain scalars",
                        )
                        .with_label("complex key"),
                    );
                    continue;
                };
                let p = pointer_push(&pointer, &name);
                let v = convert(v, p, Some(key_span), offsets, spans, errors, depth + 1);
                out.insert(name, v);
            }
            Value::Object(out)
        }
        YamlData::Alias(_) | YamlData::BadValue => {
            errors.push(
                Diagnostic::new(Code::YamlSyntax, span, "this value cannot be read")
                    .with_label("unresolvable alias or badly tagged value"),
            );
            Value::Null
        }
    };
    let end = offsets
        .byte(node.span.end.index())
        .max(span.start + span.len);
    spans.spans.insert(
        pointer,
        NodeSpan {
            value: span,
            key,
            end,
        },
    );
    value
}

fn scalar(s: &Scalar<'_>) -> Value {
    match s {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::Number((*i).into()),
        Scalar::FloatingPoint(f) => Number::from_f64(f.into_inner())
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(f.to_string())),
        Scalar::String(s) => Value::String(s.to_string()),
    }
}

fn key_string(k: &MarkedYaml<'_>) -> Option<String> {
    match &k.data {
        YamlData::Value(s) => Some(match scalar(s) {
            Value::String(s) => s,
            Value::Null => "null".to_string(),
            other => other.to_string(),
        }),
        YamlData::Representation(raw, _, _) => Some(raw.to_string()),
        YamlData::Tagged(_, inner) => key_string(inner),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Document {
        match parse(&SourceFile::new("t.yaml", text)) {
            Ok(d) => d,
            Err(e) => panic!("parse failed: {e:?}"),
        }
    }

    #[test]
    fn yaml_1_2_scalars_keep_their_meaning() {
        let d = doc("a: on\nb: 010\nc: no\nd: 1.5\ne: ~\nf: '3'\n");
        assert_eq!(
            d.value,
            serde_json::json!({"a": "on", "b": 10, "c": "no", "d": 1.5, "e": null, "f": "3"})
        );
    }

    #[test]
    fn spans_point_at_values_and_keys() {
        let text = "id: x\nsteps:\n  - id: one\n    type: wait\n";
        let d = doc(text);
        let v = d.spans.value("/steps/0/type");
        assert_eq!(&text[v.start..v.start + v.len], "wait");
        let k = d.spans.key("/steps/0/type");
        assert_eq!(&text[k.start..k.start + k.len], "type");
    }

    #[test]
    fn spans_are_bytes_even_after_multibyte_characters() {
        let text = "description: çà et là\nid: x\n";
        let d = doc(text);
        let v = d.spans.value("/id");
        assert_eq!(&text[v.start..v.start + v.len], "x");
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let file = SourceFile::new("t.yaml", "a: [1, 2\nb: 3\n");
        let Err(e) = parse(&file) else {
            panic!("expected an error")
        };
        assert_eq!(e.code, Code::YamlSyntax);
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let file = SourceFile::new("t.yaml", "a: 1\na: 2\n");
        assert!(parse(&file).is_err());
    }
}
