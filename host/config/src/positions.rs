//! Where each field of a YAML document sits in the file, keyed by the same path syntax that
//! `serde_path_to_error` prints (`routes[2].cluster`). Semantic checks run on typed values that
//! no longer know their position; this index lets them point at the line anyway.

use std::collections::HashMap;

use serde_saphyr::granit_parser::{Event, Parser};

/// 1-based line and column.
pub type Pos = (usize, usize);

/// Field path → position of its value (and, for mapping entries, of its key).
#[derive(Debug, Default)]
pub struct Positions {
    values: HashMap<String, Pos>,
    keys: HashMap<String, Pos>,
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, next: usize },
}

impl Positions {
    /// Indexes `text`. Syntax errors stop the walk; the serde pass reports them properly.
    pub fn index(text: &str) -> Self {
        let mut me = Positions::default();
        let mut stack: Vec<Frame> = Vec::new();
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            let pos = (span.start.line(), span.start.col() + 1);
            match event {
                Event::Scalar(value, ..) => {
                    if let Some(Frame::Map { path, key }) = stack.last_mut()
                        && key.is_none()
                    {
                        let child = join_key(path, &value);
                        me.keys.insert(child.clone(), pos);
                        *key = Some(child);
                        continue;
                    }
                    let path = me.child_path(&mut stack);
                    me.values.entry(path).or_insert(pos);
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let path = me.child_path(&mut stack);
                    me.values.entry(path.clone()).or_insert(pos);
                    stack.push(if matches!(event, Event::MappingStart(..)) {
                        Frame::Map { path, key: None }
                    } else {
                        Frame::Seq { path, next: 0 }
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                Event::Alias(..) => {
                    me.child_path(&mut stack);
                }
                _ => {}
            }
        }
        me
    }

    /// Path of the node that starts now, consuming the pending key or sequence slot.
    fn child_path(&self, stack: &mut [Frame]) -> String {
        match stack.last_mut() {
            None => String::new(),
            Some(Frame::Map { key, .. }) => key.take().unwrap_or_default(),
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                p
            }
        }
    }

    /// Position of the value at `path`, or of its nearest ancestor that exists in the file
    /// (a defaulted field has no position of its own).
    pub fn lookup(&self, path: &str) -> Pos {
        let mut p = path;
        loop {
            if let Some(pos) = self.values.get(p) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return self.values.get("").copied().unwrap_or((1, 1)),
            }
        }
    }

    /// Position of the key that introduces `path`, when it is a mapping entry.
    pub fn key(&self, path: &str) -> Option<Pos> {
        self.keys.get(path).copied()
    }
}

fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_nested_maps_and_sequences() {
        let text = "a: 1\nroutes:\n  - name: x\n    cluster: users\n  - cluster: b\n";
        let p = Positions::index(text);
        assert_eq!(p.lookup("a"), (1, 4));
        assert_eq!(p.lookup("routes[0].cluster"), (4, 14));
        assert_eq!(p.lookup("routes[1].cluster"), (5, 14));
        assert_eq!(p.key("routes[0].cluster"), Some((4, 5)));
        // A missing field points at its closest existing parent.
        assert_eq!(p.lookup("routes[1].timeout"), (5, 5));
    }
}
