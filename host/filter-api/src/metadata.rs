//! Static metadata a filter can read (Envoy's `metadata.filter_metadata` on a route, read
//! through the `route_metadata` property): a tree of protobuf `Struct` values.

/// One value of the tree; numbers are doubles, as in a protobuf `Struct`.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    Null,
    Bool(bool),
    Number(f64),
    String(Box<str>),
    List(Box<[MetaValue]>),
    /// Keys in the order they were written.
    Map(Box<[(Box<str>, MetaValue)]>),
}

impl MetaValue {
    /// The value `path` leads to below this one, one map key per step.
    pub fn get<'a>(&self, path: impl IntoIterator<Item = &'a [u8]>) -> Option<&MetaValue> {
        path.into_iter().try_fold(self, |v, key| match v {
            MetaValue::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_bytes() == key)
                .map(|(_, v)| v),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_walks_maps_only() {
        let tree = MetaValue::Map(Box::new([(
            "filter_metadata".into(),
            MetaValue::Map(Box::new([(
                "acme".into(),
                MetaValue::Map(Box::new([(
                    "auth".into(),
                    MetaValue::String("x-auth".into()),
                )])),
            )])),
        )]));
        let at = |p: &[&str]| tree.get(p.iter().map(|s| s.as_bytes()));
        assert_eq!(
            at(&["filter_metadata", "acme", "auth"]),
            Some(&MetaValue::String("x-auth".into()))
        );
        assert_eq!(at(&["filter_metadata", "acme", "auth", "deeper"]), None);
        assert_eq!(at(&["filter_metadata", "nope"]), None);
        assert_eq!(at(&[]), Some(&tree));
    }
}
