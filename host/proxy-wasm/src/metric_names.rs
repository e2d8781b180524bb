//! How a metric a filter defines (`proxy_define_metric`) is named on `/metrics`: Envoy's tag
//! extraction (`stats_config.stats_tags`), so that filters that encode labels in their metric
//! names, as Istio's and the Go SDK's do, show them as Prometheus labels.

use std::collections::HashMap;
use std::ops::Range;

use regex::Regex;
use rustygate_config::MetricTag;

/// One configured tag, ready to apply.
#[derive(Debug)]
pub(crate) struct Tag {
    name: &'static str,
    rule: Rule,
}

#[derive(Debug)]
enum Rule {
    Regex(Regex),
    Fixed(String),
}

/// Label names for the metrics registry, which keys labels by `&'static str`: each distinct
/// configured name is leaked once, so reloads that keep a name cost nothing and the total is
/// bounded by the names ever configured.
#[derive(Debug, Default)]
pub(crate) struct LabelNames(HashMap<String, &'static str>);

impl LabelNames {
    fn get(&mut self, name: &str) -> &'static str {
        if let Some(n) = self.0.get(name) {
            return n;
        }
        let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
        self.0.insert(name.to_owned(), leaked);
        leaked
    }
}

/// The configured tags; ones the configuration check would have refused are left out.
pub(crate) fn compile(config: &[MetricTag], names: &mut LabelNames) -> Vec<Tag> {
    config
        .iter()
        .filter_map(|t| {
            let rule = match (&t.regex, &t.fixed_value) {
                (Some(re), None) => Rule::Regex(Regex::new(re).ok()?),
                (None, Some(v)) => Rule::Fixed(v.clone()),
                _ => return None,
            };
            Some(Tag {
                name: names.get(&t.name),
                rule,
            })
        })
        .collect()
}

/// The name left once every tag that matches has cut its part out, and the labels found. Each
/// tag looks at the name as the filter gave it, as Envoy's extractors do.
pub(crate) fn extract(name: &str, tags: &[Tag]) -> (String, Vec<(&'static str, String)>) {
    let mut labels = Vec::new();
    let mut cut: Vec<Range<usize>> = Vec::new();
    for t in tags {
        match &t.rule {
            Rule::Fixed(v) => labels.push((t.name, v.clone())),
            Rule::Regex(re) => {
                let Some(caps) = re.captures(name) else {
                    continue;
                };
                let Some(whole) = caps.get(1) else {
                    continue;
                };
                let value = caps.get(2).unwrap_or(whole);
                labels.push((t.name, value.as_str().to_owned()));
                cut.push(whole.range());
            }
        }
    }
    let kept = name
        .char_indices()
        .filter(|(i, _)| !cut.iter().any(|r| r.contains(i)))
        .map(|(_, c)| c)
        .collect();
    (kept, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(spec: &[(&str, Option<&str>, Option<&str>)]) -> Vec<Tag> {
        let config: Vec<MetricTag> = spec
            .iter()
            .map(|(n, re, v)| MetricTag {
                name: n.to_string(),
                regex: re.map(str::to_owned),
                fixed_value: v.map(str::to_owned),
            })
            .collect();
        compile(&config, &mut LabelNames::default())
    }

    #[test]
    fn tags_come_out_of_the_name_as_envoy_extracts_them() {
        // The Go SDK's metrics example and its envoy.yaml.
        let t = tags(&[
            ("value", Some("(_value=([a-zA-Z]+))"), None),
            ("reporter", Some("(_reporter=([a-zA-Z]+))"), None),
        ]);
        let (name, labels) = extract(
            "custom_header_value_counts_value=foo_reporter=wasmgosdk",
            &t,
        );
        assert_eq!(name, "custom_header_value_counts");
        assert_eq!(
            labels,
            vec![
                ("value", "foo".to_owned()),
                ("reporter", "wasmgosdk".to_owned())
            ]
        );
        // A name a tag does not match keeps that part and gets no such label.
        let (name, labels) = extract("plain_counter", &t);
        assert_eq!((name.as_str(), labels.len()), ("plain_counter", 0));
    }

    #[test]
    fn one_group_is_both_cut_and_value_and_fixed_values_apply_to_all() {
        let t = tags(&[
            ("code", Some("\\.(\\d{3})$"), None),
            ("mesh", None, Some("east")),
        ]);
        let (name, labels) = extract("upstream_rq.503", &t);
        assert_eq!(name, "upstream_rq.");
        assert_eq!(
            labels,
            vec![("code", "503".to_owned()), ("mesh", "east".to_owned())]
        );
    }

    #[test]
    fn a_label_name_is_leaked_once() {
        let mut names = LabelNames::default();
        let a = names.get("value");
        let b = names.get("value");
        assert!(std::ptr::eq(a, b));
    }
}
