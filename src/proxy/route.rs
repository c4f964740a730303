//! Route selection: the longest matching path prefix first, then methods, then the optional
//! `models` globs on the body's `model`.
//!
//! Prefixes match whole path segments: `/v1/models` matches `/v1/models` and `/v1/models/x` but
//! not `/v1/modelsx`; a prefix ending in `/` matches everything below it. A route that matches
//! the path but not the method or model is skipped in favour of the next most specific one.

use http::Method;

use crate::config::Route;
use crate::policy::glob_match;

/// Route indices sorted from the most specific (longest) path to the least; ties keep file
/// order. Computed once per config.
pub fn order(routes: &[Route]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..routes.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(routes[i].path.len()));
    order
}

/// Whether `prefix` covers `path`, on segment boundaries.
pub fn path_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
    }
}

fn method_matches(route: &Route, method: &Method) -> bool {
    route.methods.as_ref().is_none_or(|m| m.contains(method))
}

fn model_matches(route: &Route, model: Option<&str>) -> bool {
    match (&route.models, model) {
        (None, _) => true,
        (Some(globs), Some(model)) => globs.iter().any(|g| glob_match(g, model)),
        (Some(_), None) => false,
    }
}

/// The routes that match the path and method, most specific first.
fn candidates<'a>(
    routes: &'a [Route],
    order: &'a [usize],
    method: &'a Method,
    path: &'a str,
) -> impl Iterator<Item = (usize, &'a Route)> + 'a {
    order
        .iter()
        .map(move |&i| (i, &routes[i]))
        .filter(move |(_, r)| path_matches(&r.path, path) && method_matches(r, method))
}

/// Whether choosing a route for this request depends on the body's `model`: the most specific
/// candidate has `models` (a candidate without them would match any model and end the search).
pub fn needs_model(routes: &[Route], order: &[usize], method: &Method, path: &str) -> bool {
    candidates(routes, order, method, path)
        .next()
        .is_some_and(|(_, r)| r.models.is_some())
}

/// The error style for a request, known before its body is read: that of the most specific
/// route matching path and method, OpenAI's when none does.
pub fn style_for(
    routes: &[Route],
    order: &[usize],
    method: &Method,
    path: &str,
) -> crate::config::ErrorStyle {
    candidates(routes, order, method, path)
        .next()
        .map_or(crate::config::ErrorStyle::OpenAi, |(_, r)| r.errors)
}

/// The route serving this request, as an index into `routes`.
pub fn select(
    routes: &[Route],
    order: &[usize],
    method: &Method,
    path: &str,
    model: Option<&str>,
) -> Option<usize> {
    candidates(routes, order, method, path)
        .find(|(_, r)| model_matches(r, model))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ErrorStyle;
    use crate::scope::Scope;
    use proptest::prelude::*;

    fn route(path: &str, methods: Option<&[&str]>, models: Option<&[&str]>) -> Route {
        Route {
            path: path.into(),
            methods: methods.map(|m| m.iter().map(|s| s.parse().unwrap()).collect()),
            upstream: "u".into(),
            scope: Scope::Chat,
            errors: ErrorStyle::OpenAi,
            models: models.map(|m| m.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn spec_routes() -> Vec<Route> {
        vec![
            route("/v1/messages", None, None),
            route("/v1/models", Some(&["GET"]), None),
            route("/v1/", None, None),
        ]
    }

    #[test]
    fn the_longest_prefix_wins() {
        let routes = spec_routes();
        let order = order(&routes);
        let pick = |m: &str, p: &str| select(&routes, &order, &m.parse().unwrap(), p, None);
        assert_eq!(pick("POST", "/v1/messages"), Some(0));
        assert_eq!(pick("GET", "/v1/models"), Some(1));
        assert_eq!(pick("GET", "/v1/models/gpt-4o"), Some(1));
        assert_eq!(pick("POST", "/v1/chat/completions"), Some(2));
        assert_eq!(pick("GET", "/v2/x"), None);
        assert_eq!(pick("GET", "/v1"), None);
    }

    #[test]
    fn a_method_mismatch_falls_through_to_the_next_route() {
        let routes = spec_routes();
        let order = order(&routes);
        assert_eq!(
            select(&routes, &order, &Method::POST, "/v1/models", None),
            Some(2)
        );
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(path_matches("/v1/models", "/v1/models"));
        assert!(path_matches("/v1/models", "/v1/models/x"));
        assert!(!path_matches("/v1/models", "/v1/modelsx"));
        assert!(path_matches("/v1/", "/v1/anything"));
        assert!(path_matches("/", "/x"));
    }

    #[test]
    fn models_pick_among_routes_of_the_same_path() {
        let routes = vec![
            route("/v1/", None, Some(&["claude-*"])),
            route("/v1/", None, None),
        ];
        let order = order(&routes);
        let m = Method::POST;
        assert!(needs_model(&routes, &order, &m, "/v1/chat"));
        assert_eq!(
            select(&routes, &order, &m, "/v1/chat", Some("claude-3")),
            Some(0)
        );
        assert_eq!(
            select(&routes, &order, &m, "/v1/chat", Some("gpt-4o")),
            Some(1)
        );
        assert_eq!(select(&routes, &order, &m, "/v1/chat", None), Some(1));
        let spec = spec_routes();
        assert!(!needs_model(&spec, &super::order(&spec), &m, "/v1/chat"));
    }

    proptest! {
        #[test]
        fn the_selected_route_always_covers_the_path_and_is_the_most_specific(
            path in "/[a-z]{1,3}(/[a-z]{1,3}){0,3}",
        ) {
            let routes = vec![
                route("/", None, None),
                route("/a", None, None),
                route("/a/b", None, None),
                route("/b/", None, None),
            ];
            let order = order(&routes);
            let chosen = select(&routes, &order, &Method::GET, &path, None).unwrap();
            prop_assert!(path_matches(&routes[chosen].path, &path));
            for r in &routes {
                if path_matches(&r.path, &path) {
                    prop_assert!(r.path.len() <= routes[chosen].path.len());
                }
            }
        }
    }
}
