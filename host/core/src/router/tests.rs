use super::*;
use rustygate_config::{PathMatch, RouteMatch, ValueMatch};

fn route(path: Option<PathMatch>) -> RouteMatch {
    RouteMatch {
        path,
        ..Default::default()
    }
}

fn find(
    router: &Router,
    method: &str,
    uri: &str,
    host: Option<&str>,
    headers: &[(&str, &str)],
) -> Option<usize> {
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (uri, None),
    };
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    router.find(&RequestView {
        method: &method,
        path,
        query,
        host,
        scheme: "http",
        headers: &map,
    })
}

#[test]
fn first_match_in_file_order_wins_across_index_kinds() {
    let routes = [
        route(Some(PathMatch::Regex("/api/v[0-9]+/.*".into()))),
        route(Some(PathMatch::Prefix("/api".into()))),
        route(Some(PathMatch::Exact("/api/health".into()))),
        route(None),
    ];
    let r = Router::new(&routes).unwrap();
    assert_eq!(find(&r, "GET", "/api/v1/users", None, &[]), Some(0));
    assert_eq!(find(&r, "GET", "/api/health", None, &[]), Some(1));
    assert_eq!(
        find(&r, "GET", "/apiary", None, &[]),
        Some(1),
        "prefix is a plain string prefix, as in Envoy"
    );
    assert_eq!(find(&r, "GET", "/other", None, &[]), Some(3));
}

#[test]
fn exact_and_regex_are_whole_path() {
    let routes = [
        route(Some(PathMatch::Exact("/a".into()))),
        route(Some(PathMatch::Regex("/b+".into()))),
    ];
    let r = Router::new(&routes).unwrap();
    assert_eq!(find(&r, "GET", "/a", None, &[]), Some(0));
    assert_eq!(find(&r, "GET", "/a/", None, &[]), None);
    assert_eq!(find(&r, "GET", "/bbb", None, &[]), Some(1));
    assert_eq!(find(&r, "GET", "/bbbx", None, &[]), None);
    assert_eq!(
        find(&r, "GET", "/a?x=1", None, &[]),
        Some(0),
        "query is not part of the path"
    );
}

#[test]
fn host_patterns() {
    let mk = |h: &str| RouteMatch {
        host: Some(h.into()),
        ..Default::default()
    };
    let r = Router::new(&[
        mk("api.example.com"),
        mk("*.example.com"),
        mk("shop.*"),
        mk("*"),
    ])
    .unwrap();
    assert_eq!(
        find(&r, "GET", "/", Some("API.example.com:8080"), &[]),
        Some(0)
    );
    assert_eq!(find(&r, "GET", "/", Some("x.example.com"), &[]), Some(1));
    assert_eq!(
        find(&r, "GET", "/", Some("example.com"), &[]),
        Some(3),
        "*.example.com needs a subdomain"
    );
    assert_eq!(find(&r, "GET", "/", Some("shop.io"), &[]), Some(2));
    assert_eq!(find(&r, "GET", "/", Some("[::1]:80"), &[]), Some(3));
    assert_eq!(find(&r, "GET", "/", None, &[]), Some(3));
}

#[test]
fn methods_headers_and_query() {
    let routes = [
        RouteMatch {
            methods: vec!["POST".into()],
            ..Default::default()
        },
        RouteMatch {
            headers: vec![ValueMatch {
                name: "X-Env".into(),
                exact: Some("prod".into()),
                ..Default::default()
            }],
            ..Default::default()
        },
        RouteMatch {
            headers: vec![ValueMatch {
                name: "x-debug".into(),
                present: Some(true),
                invert: true,
                ..Default::default()
            }],
            query: vec![ValueMatch {
                name: "q".into(),
                regex: Some("a b".into()),
                ..Default::default()
            }],
            ..Default::default()
        },
    ];
    let r = Router::new(&routes).unwrap();
    assert!(r.reads_headers());
    assert!(!Router::new(&routes[..1]).unwrap().reads_headers());
    assert_eq!(find(&r, "POST", "/", None, &[]), Some(0));
    assert_eq!(find(&r, "GET", "/", None, &[("x-env", "prod")]), Some(1));
    assert_eq!(find(&r, "GET", "/", None, &[("x-env", "dev")]), None);
    assert_eq!(find(&r, "GET", "/?z=1&q=a%20b", None, &[]), Some(2));
    assert_eq!(
        find(&r, "GET", "/?q=a%20b", None, &[("x-debug", "1")]),
        None
    );
}

#[test]
fn header_conditions_on_pseudo_headers_read_the_request_line() {
    let cond = |name: &str, exact: Option<&str>, regex: Option<&str>| RouteMatch {
        headers: vec![ValueMatch {
            name: name.into(),
            exact: exact.map(Into::into),
            regex: regex.map(Into::into),
            ..Default::default()
        }],
        ..Default::default()
    };
    let routes = [
        cond(":authority", Some("a.test:8080"), None),
        // `host` is `:authority`: it holds for a client that sent no `Host` header.
        cond("Host", Some("b.test"), None),
        cond(":method", Some("PATCH"), None),
        cond(":path", None, Some(r"/p\?tenant=[a-z]+")),
        cond(":scheme", Some("https"), None),
    ];
    let r = Router::new(&routes).unwrap();
    assert!(
        !r.reads_headers(),
        "they depend on what a caller compares before routing again, not on the header map"
    );
    assert_eq!(find(&r, "GET", "/", Some("a.test:8080"), &[]), Some(0));
    assert_eq!(find(&r, "GET", "/", Some("b.test"), &[]), Some(1));
    assert_eq!(
        find(&r, "GET", "/", None, &[("host", "b.test")]),
        None,
        "the host the caller gives is the one conditions read"
    );
    assert_eq!(find(&r, "PATCH", "/", None, &[]), Some(2));
    assert_eq!(find(&r, "GET", "/p?tenant=blue", None, &[]), Some(3));
    assert_eq!(
        find(&r, "GET", "/p", None, &[]),
        None,
        ":path carries the query"
    );
    let https = RequestView {
        method: &Method::GET,
        path: "/",
        query: None,
        host: None,
        scheme: "https",
        headers: &HeaderMap::new(),
    };
    assert_eq!(r.find(&https), Some(4));
}
