//! Route and cluster metadata as the protobuf message Envoy hands a filter that reads the whole
//! `route_metadata` / `cluster_metadata` property: `envoy.config.core.v3.Metadata`, whose
//! `filter_metadata` maps each namespace to a `google.protobuf.Struct`. Only the writer is
//! needed, and only for these few messages, so it is written out here rather than generated.

use rustygate_filter_api::MetaValue;

const LEN: u8 = 2;
const FIXED64: u8 = 1;
const VARINT: u8 = 0;

/// `Metadata` for a tree laid out as `{ filter_metadata: { <namespace>: { … } } }`.
pub(crate) fn metadata(root: &MetaValue) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(MetaValue::Map(namespaces)) = root.get([&b"filter_metadata"[..]]) {
        // map<string, Struct> filter_metadata = 1.
        for (namespace, fields) in namespaces.iter() {
            map_entry(&mut out, 1, namespace, &strukt(fields));
        }
    }
    out
}

/// `google.protobuf.Struct` (map<string, Value> fields = 1); a namespace's value is always a
/// map (the configuration requires it), anything else is an empty struct.
fn strukt(v: &MetaValue) -> Vec<u8> {
    let mut out = Vec::new();
    if let MetaValue::Map(fields) = v {
        for (key, value) in fields.iter() {
            map_entry(&mut out, 1, key, &value_message(value));
        }
    }
    out
}

/// `google.protobuf.Value`: null_value = 1, number_value = 2, string_value = 3,
/// bool_value = 4, struct_value = 5, list_value = 6.
fn value_message(v: &MetaValue) -> Vec<u8> {
    let mut out = Vec::new();
    match v {
        MetaValue::Null => {
            key(&mut out, 1, VARINT);
            out.push(0);
        }
        MetaValue::Number(n) => {
            key(&mut out, 2, FIXED64);
            out.extend_from_slice(&n.to_le_bytes());
        }
        MetaValue::String(s) => string_field(&mut out, 3, s),
        MetaValue::Bool(b) => {
            key(&mut out, 4, VARINT);
            out.push(u8::from(*b));
        }
        MetaValue::Map(_) => message_field(&mut out, 5, &strukt(v)),
        MetaValue::List(items) => {
            // ListValue: repeated Value values = 1.
            let mut list = Vec::new();
            for item in items.iter() {
                message_field(&mut list, 1, &value_message(item));
            }
            message_field(&mut out, 6, &list);
        }
    }
    out
}

/// One entry of a `map<string, message>` field: a message of its own with the key as field 1
/// and the value as field 2.
fn map_entry(out: &mut Vec<u8>, field: u32, key: &str, value: &[u8]) {
    let mut entry = Vec::with_capacity(key.len() + value.len() + 6);
    string_field(&mut entry, 1, key);
    message_field(&mut entry, 2, value);
    message_field(out, field, &entry);
}

fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, u64::from(field << 3 | u32::from(wire)));
}

fn string_field(out: &mut Vec<u8>, field: u32, s: &str) {
    message_field(out, field, s.as_bytes());
}

fn message_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    key(out, field, LEN);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(namespace: &str, fields: Vec<(&str, MetaValue)>) -> MetaValue {
        let fields = fields.into_iter().map(|(k, v)| (k.into(), v)).collect();
        MetaValue::Map(Box::new([(
            "filter_metadata".into(),
            MetaValue::Map(Box::new([(namespace.into(), MetaValue::Map(fields))])),
        )]))
    }

    #[test]
    fn one_string_field_encodes_as_protoc_would() {
        let md = tree("acme", vec![("zone", MetaValue::String("eu-west".into()))]);
        // Metadata{filter_metadata{"acme": Struct{fields{"zone": Value{string_value}}}}}, as
        // `protoc --encode` writes it.
        let want = b"\x0a\x1b\x0a\x04acme\x12\x13\x0a\x11\x0a\x04zone\x12\x09\x1a\x07eu-west";
        assert_eq!(metadata(&md), want);
    }

    /// Envoy's `Metadata`, for prost to encode.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Metadata {
        #[prost(btree_map = "string, message", tag = "1")]
        filter_metadata: std::collections::BTreeMap<String, prost_types::Struct>,
    }

    fn prost_value(v: &MetaValue) -> prost_types::Value {
        use prost_types::value::Kind;
        let kind = match v {
            MetaValue::Null => Kind::NullValue(0),
            MetaValue::Number(n) => Kind::NumberValue(*n),
            MetaValue::String(s) => Kind::StringValue(s.to_string()),
            MetaValue::Bool(b) => Kind::BoolValue(*b),
            MetaValue::Map(_) => Kind::StructValue(prost_struct(v)),
            MetaValue::List(items) => Kind::ListValue(prost_types::ListValue {
                values: items.iter().map(prost_value).collect(),
            }),
        };
        prost_types::Value { kind: Some(kind) }
    }

    fn prost_struct(v: &MetaValue) -> prost_types::Struct {
        let MetaValue::Map(fields) = v else {
            unreachable!()
        };
        prost_types::Struct {
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), prost_value(v)))
                .collect(),
        }
    }

    #[test]
    fn nested_values_encode_as_prost_encodes_them() {
        use prost::Message;
        // Keys in sorted order, as prost's maps hold them (and as the configuration's are).
        let md = tree(
            "envoy.filters.http.wasm",
            vec![
                (
                    "limits",
                    MetaValue::Map(Box::new([
                        ("burst".into(), MetaValue::Number(20.0)),
                        (
                            "tiers".into(),
                            MetaValue::List(Box::new([
                                MetaValue::String("gold".into()),
                                MetaValue::Bool(false),
                                MetaValue::Null,
                            ])),
                        ),
                    ])),
                ),
                (
                    "owner",
                    MetaValue::String("edge".repeat(40).as_str().into()),
                ),
            ],
        );
        let MetaValue::Map(root) = &md else {
            unreachable!()
        };
        let MetaValue::Map(namespaces) = &root[0].1 else {
            unreachable!()
        };
        let want = Metadata {
            filter_metadata: namespaces
                .iter()
                .map(|(k, v)| (k.to_string(), prost_struct(v)))
                .collect(),
        };
        assert_eq!(metadata(&md), want.encode_to_vec());
    }

    #[test]
    fn every_kind_of_value_and_long_lengths() {
        let long = "x".repeat(200);
        let md = tree(
            "n",
            vec![
                ("a", MetaValue::Null),
                ("b", MetaValue::Number(1.5)),
                ("c", MetaValue::Bool(true)),
                (
                    "d",
                    MetaValue::List(Box::new([MetaValue::String(long.as_str().into())])),
                ),
            ],
        );
        let bytes = metadata(&md);
        // null_value 0, number_value as a fixed64, bool_value 1, and a 200-byte string whose
        // length takes two varint bytes (0xc8 0x01).
        let find = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(find(b"\x0a\x01a\x12\x02\x08\x00"));
        let mut number = b"\x0a\x01b\x12\x09\x11".to_vec();
        number.extend_from_slice(&1.5f64.to_le_bytes());
        assert!(find(&number));
        assert!(find(b"\x0a\x01c\x12\x02\x20\x01"));
        assert!(find(b"\x1a\xc8\x01xxxx"));
        assert_eq!(metadata(&MetaValue::Map(Box::new([]))), b"");
    }
}
