//! Checks for `[[routes]]` and `[presets.ID]`: paths, methods, scopes and model globs, that every
//! route and preset names a defined upstream, and that no route is shadowed by an identical one.

use std::collections::BTreeMap;

use http::Method;

use super::ctx::Ctx;
use super::locate::Path;
use crate::config::raw::{RawPreset, RawRoute};
use crate::config::{ErrorStyle, Preset, Route};
use crate::scope::Scope;

/// What makes two routes the same: path, method set and model set.
type RouteKey = (String, Option<Vec<String>>, Option<Vec<String>>);

pub(super) fn routes(cx: &mut Ctx<'_, '_>, raw: &[RawRoute], defined: &[String]) -> Vec<Route> {
    let mut routes: Vec<(usize, RouteKey, Route)> = Vec::new();
    for (i, entry) in raw.iter().enumerate() {
        let Some(route) = route(cx, &Path::root().key("routes").index(i), entry, defined) else {
            continue;
        };
        let key = route_key(&route);
        if let Some((first, _, _)) = routes.iter().find(|(_, seen, _)| *seen == key) {
            cx.error(
                &Path::root().key("routes").index(i).key("path"),
                format!(
                    "same path, methods and models as routes[{first}], so this route can never \
                     match"
                ),
            );
            continue;
        }
        routes.push((i, key, route));
    }
    routes.into_iter().map(|(_, _, route)| route).collect()
}

fn route_key(route: &Route) -> RouteKey {
    let methods = route.methods.as_ref().map(|methods| {
        let mut names: Vec<String> = methods.iter().map(|m| m.as_str().to_owned()).collect();
        names.sort();
        names
    });
    let models = route.models.as_ref().map(|models| {
        let mut models = models.clone();
        models.sort();
        models.dedup();
        models
    });
    (route.path.clone(), methods, models)
}

fn route(cx: &mut Ctx<'_, '_>, p: &Path, raw: &RawRoute, defined: &[String]) -> Option<Route> {
    let path = cx
        .required(&p.key("path"), &raw.path)
        .and_then(|path| route_path(cx, &p.key("path"), path));
    let methods = match &raw.methods {
        None => Some(None),
        Some(names) => methods(cx, &p.key("methods"), names).map(Some),
    };
    let upstream = cx
        .required(&p.key("upstream"), &raw.upstream)
        .and_then(|name| defined_upstream(cx, &p.key("upstream"), name, defined));
    let scope = match raw.scope.as_deref().map(str::parse::<Scope>) {
        None => Some(Scope::Chat),
        Some(Ok(scope)) => Some(scope),
        Some(Err(err)) => {
            cx.error(&p.key("scope"), err.to_string());
            None
        }
    };
    let errors = cx.choice(
        &p.key("errors"),
        raw.errors.as_deref(),
        ErrorStyle::OpenAi,
        &[
            ("openai", ErrorStyle::OpenAi),
            ("anthropic", ErrorStyle::Anthropic),
        ],
    );
    let models = match &raw.models {
        None => Some(None),
        Some(globs) => models(cx, &p.key("models"), globs).map(Some),
    };
    Some(Route {
        path: path?,
        methods: methods?,
        upstream: upstream?,
        scope: scope?,
        errors,
        models: models?,
    })
}

fn route_path(cx: &mut Ctx<'_, '_>, path: &Path, value: &str) -> Option<String> {
    let message = if !value.starts_with('/') {
        "must start with \"/\", such as \"/v1/\""
    } else if value.contains(['?', '#']) {
        "must be a path only, without ?query or #fragment"
    } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "must not contain spaces or control characters"
    } else {
        return Some(value.to_owned());
    };
    cx.error(path, message);
    None
}

fn methods(cx: &mut Ctx<'_, '_>, path: &Path, names: &[String]) -> Option<Vec<Method>> {
    if names.is_empty() {
        if !cx.failed(path) {
            cx.error(
                path,
                "must not be empty (leave methods out to match every method)",
            );
        }
        return None;
    }
    let before = cx.error_count();
    let mut methods: Vec<Method> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        match Method::from_bytes(name.to_ascii_uppercase().as_bytes()) {
            Err(_) => cx.error(&path.index(i), format!("invalid HTTP method {name:?}")),
            Ok(method) if methods.contains(&method) => {
                cx.error(&path.index(i), format!("method {method} is listed twice"))
            }
            Ok(method) => methods.push(method),
        }
    }
    (cx.error_count() == before).then_some(methods)
}

fn models(cx: &mut Ctx<'_, '_>, path: &Path, globs: &[String]) -> Option<Vec<String>> {
    if globs.is_empty() {
        if !cx.failed(path) {
            cx.error(
                path,
                "must not be empty (leave models out to match any model)",
            );
        }
        return None;
    }
    let before = cx.error_count();
    for (i, glob) in globs.iter().enumerate() {
        if glob.trim().is_empty() {
            cx.error(&path.index(i), "a model glob must not be empty");
        }
    }
    (cx.error_count() == before).then(|| globs.to_vec())
}

/// `name` when it is one of the upstreams written in the file.
fn defined_upstream(
    cx: &mut Ctx<'_, '_>,
    path: &Path,
    name: &str,
    defined: &[String],
) -> Option<String> {
    if defined.iter().any(|d| d == name) {
        return Some(name.to_owned());
    }
    let message = if defined.is_empty() {
        format!("upstream {name:?} is not defined (there are no [upstreams.NAME] sections)")
    } else {
        format!(
            "upstream {name:?} is not defined (defined: {})",
            defined.join(", ")
        )
    };
    cx.error(path, message);
    None
}

pub(super) fn presets(
    cx: &mut Ctx<'_, '_>,
    raw: &BTreeMap<String, RawPreset>,
    defined: &[String],
) -> BTreeMap<String, Preset> {
    let mut presets = BTreeMap::new();
    for (id, entry) in raw {
        let p = Path::root().key("presets").key(id);
        let id_ok = cx.name(&p, "preset id", id);
        let upstream = cx
            .required(&p.key("upstream"), &entry.upstream)
            .and_then(|name| defined_upstream(cx, &p.key("upstream"), name, defined));
        let model = cx
            .required(&p.key("model"), &entry.model)
            .and_then(|model| {
                if model.trim().is_empty() {
                    cx.error(&p.key("model"), "must not be empty");
                    return None;
                }
                Some(model.clone())
            });
        let system_prompt = cx.required(&p.key("system_prompt"), &entry.system_prompt);
        if let (true, Some(upstream), Some(model), Some(system_prompt)) =
            (id_ok, upstream, model, system_prompt)
        {
            let preset = Preset {
                id: id.clone(),
                upstream,
                model,
                system_prompt: system_prompt.clone(),
            };
            presets.insert(id.clone(), preset);
        }
    }
    presets
}

#[cfg(test)]
mod tests {
    use super::super::tests::{errors_of, parse_ok};
    use super::*;

    const OPENAI: &str = "[upstreams.openai]\nbase_url = \"https://api.openai.com\"\n";

    #[test]
    fn routes_are_read() {
        let s = parse_ok(&format!(
            "{OPENAI}[[routes]]\npath = \"/v1/chat\"\nmethods = [\"post\", \"Get\"]\nupstream = \"openai\"\n\
             scope = \"write\"\nerrors = \"anthropic\"\nmodels = [\"gpt-*\", \"o1\"]\n\
             [[routes]]\npath = \"/v1/\"\nupstream = \"openai\"\n"
        ));
        assert_eq!(s.routes.len(), 2);
        let r = &s.routes[0];
        assert_eq!(r.path, "/v1/chat");
        assert_eq!(r.methods, Some(vec![Method::POST, Method::GET]));
        assert_eq!(r.upstream, "openai");
        assert_eq!(r.scope, Scope::Write);
        assert_eq!(r.errors, ErrorStyle::Anthropic);
        assert_eq!(r.models, Some(vec!["gpt-*".to_owned(), "o1".to_owned()]));
        let r = &s.routes[1];
        assert_eq!(
            (r.methods.as_ref(), r.scope, r.errors),
            (None, Scope::Chat, ErrorStyle::OpenAi)
        );
        assert_eq!(r.models, None);
    }

    #[test]
    fn route_mistakes_are_reported() {
        let errors = errors_of(&format!(
            "[upstreams.anthropic]\nbase_url = \"https://api.anthropic.com\"\n{OPENAI}\
             [[routes]]\npath = \"v1\"\nupstream = \"opnai\"\n\
             [[routes]]\nmethods = []\nscope = \"chta\"\nerrors = \"json\"\n\
             [[routes]]\npath = \"/x\"\nupstream = \"openai\"\nmethods = [\"GE T\", \"get\", \"GET\"]\nmodels = []\n"
        ));
        assert_eq!(
            errors,
            [
                "6:8: routes[0].path: must start with \"/\", such as \"/v1/\"",
                "7:12: routes[0].upstream: upstream \"opnai\" is not defined (defined: anthropic, \
                 openai)",
                "8:1: routes[1].path: missing required key \"path\"",
                "8:1: routes[1].upstream: missing required key \"upstream\"",
                "9:11: routes[1].methods: must not be empty (leave methods out to match every method)",
                "10:9: routes[1].scope: unknown scope \"chta\" (expected one of chat, read, write, \
                 admin, webhook)",
                "11:10: routes[1].errors: invalid value \"json\" (expected \"openai\" or \"anthropic\")",
                "15:12: routes[2].methods[0]: invalid HTTP method \"GE T\"",
                "15:27: routes[2].methods[2]: method GET is listed twice",
                "16:10: routes[2].models: must not be empty (leave models out to match any model)",
            ]
        );
    }

    #[test]
    fn a_route_that_can_never_match_is_an_error() {
        let errors = errors_of(&format!(
            "{OPENAI}[[routes]]\npath = \"/v1/\"\nupstream = \"openai\"\nmethods = [\"GET\", \"POST\"]\n\
             [[routes]]\npath = \"/v1/\"\nupstream = \"openai\"\nmethods = [\"post\", \"get\"]\n\
             [[routes]]\npath = \"/v1/\"\nupstream = \"openai\"\nmodels = [\"gpt-*\"]\n\
             [[routes]]\npath = \"/v1/\"\nupstream = \"openai\"\n"
        ));
        assert_eq!(
            errors,
            [
                "8:8: routes[1].path: same path, methods and models as routes[0], so this route can \
              never match"
            ]
        );
    }

    #[test]
    fn routes_without_upstreams_say_so() {
        assert_eq!(
            errors_of("[[routes]]\npath = \"/\"\nupstream = \"openai\"\n"),
            [
                "3:12: routes[0].upstream: upstream \"openai\" is not defined (there are no \
              [upstreams.NAME] sections)"
            ]
        );
    }

    #[test]
    fn an_upstream_with_errors_is_still_defined_for_routes() {
        let errors = errors_of(
            "[upstreams.openai]\nbase_url = 5\n[[routes]]\npath = \"/\"\nupstream = \"openai\"\n",
        );
        assert_eq!(
            errors,
            ["2:12: upstreams.openai.base_url: expected a string, found an integer"]
        );
    }

    #[test]
    fn presets_are_read_and_checked() {
        let s = parse_ok(&format!(
            "{OPENAI}[presets.support-bot]\nupstream = \"openai\"\nmodel = \"gpt-4o-mini\"\n\
             system_prompt = \"You are helpful.\"\n"
        ));
        let p = &s.presets["support-bot"];
        assert_eq!(
            (
                p.id.as_str(),
                p.upstream.as_str(),
                p.model.as_str(),
                p.system_prompt.as_str()
            ),
            ("support-bot", "openai", "gpt-4o-mini", "You are helpful.")
        );
        let errors = errors_of(&format!(
            "{OPENAI}[presets.a]\nupstream = \"anthropic\"\nmodel = \" \"\n[presets.b]\nmodel = \"m\"\n"
        ));
        assert_eq!(
            errors,
            [
                "3:1: presets.a.system_prompt: missing required key \"system_prompt\"",
                "4:12: presets.a.upstream: upstream \"anthropic\" is not defined (defined: openai)",
                "5:9: presets.a.model: must not be empty",
                "6:1: presets.b.upstream: missing required key \"upstream\"",
                "6:1: presets.b.system_prompt: missing required key \"system_prompt\"",
            ]
        );
    }
}
