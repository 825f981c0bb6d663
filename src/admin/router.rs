//! The admin listener's routes, as one table: each path, who may call it, and what each method
//! does there. [`find`] is the only matcher; the authorization check and the 404 and 405 answers
//! are written once, in `Admin::handle`.

use http::Method;

/// Who may call an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone who reaches the listener (health, metrics, the console's shell and sign-in).
    Open,
    /// The admin bearer token, or a console session (whose calls that change state need its CSRF
    /// token and the console's own origin).
    Admin,
}

/// What an endpoint does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Health,
    Ready,
    Metrics,
    Console,
    Asset,
    Login,
    Logout,
    Profiles,
    Profile,
    TestProfile,
    TestResult,
    LoginLink,
    Tokens,
    Revoke,
    ImportGrant,
    WebhookDeliveries,
    ImportGrants,
    Grants,
    Reload,
    CertificatesReload,
    ProfileForms,
    ProfileForm,
    SaveProfileForm,
    DeleteProfileForm,
    ValidateProfileForm,
}

/// One path of the admin listener.
pub struct Route {
    /// Segments separated by `/`; each `{…}` matches one non-empty segment, handed to the endpoint
    /// in order.
    pub path: &'static str,
    pub access: Access,
    pub methods: &'static [(Method, Endpoint)],
}

impl Route {
    /// The endpoint `method` reaches here, if any.
    pub fn endpoint(&self, method: &Method) -> Option<Endpoint> {
        self.methods
            .iter()
            .find(|(m, _)| m == method)
            .map(|(_, e)| *e)
    }

    /// The methods allowed here, for `Allow`.
    pub fn allow(&self) -> String {
        let names: Vec<&str> = self.methods.iter().map(|(m, _)| m.as_str()).collect();
        names.join(", ")
    }
}

use Access::{Admin, Open};
use Endpoint::*;

/// Every route of the admin listener.
pub static ROUTES: &[Route] = &[
    Route {
        path: "/healthz",
        access: Open,
        methods: &[(Method::GET, Health)],
    },
    Route {
        path: "/readyz",
        access: Open,
        methods: &[(Method::GET, Ready)],
    },
    Route {
        path: "/metrics",
        access: Open,
        methods: &[(Method::GET, Metrics)],
    },
    Route {
        path: "/admin",
        access: Open,
        methods: &[(Method::GET, Console)],
    },
    Route {
        path: "/admin/",
        access: Open,
        methods: &[(Method::GET, Console)],
    },
    Route {
        path: "/admin/console.js",
        access: Open,
        methods: &[(Method::GET, Asset)],
    },
    Route {
        path: "/admin/console.css",
        access: Open,
        methods: &[(Method::GET, Asset)],
    },
    Route {
        path: "/admin/login",
        access: Open,
        methods: &[(Method::POST, Login)],
    },
    Route {
        path: "/admin/logout",
        access: Admin,
        methods: &[(Method::POST, Logout)],
    },
    Route {
        path: "/admin/profiles",
        access: Admin,
        methods: &[(Method::GET, Profiles)],
    },
    Route {
        path: "/admin/profiles/{name}",
        access: Admin,
        methods: &[(Method::GET, Profile)],
    },
    Route {
        path: "/admin/profiles/{name}/test",
        access: Admin,
        methods: &[(Method::POST, TestProfile)],
    },
    Route {
        path: "/admin/profiles/{name}/login-links",
        access: Admin,
        methods: &[(Method::POST, LoginLink)],
    },
    Route {
        path: "/admin/profiles/{name}/test/{test_id}",
        access: Admin,
        methods: &[(Method::GET, TestResult)],
    },
    Route {
        path: "/admin/tokens",
        access: Admin,
        methods: &[(Method::GET, Tokens)],
    },
    Route {
        path: "/admin/tokens/{profile}",
        access: Admin,
        methods: &[(Method::DELETE, Revoke)],
    },
    // End users' grants: listed page by page, imported in bulk (`src/admin/grants.rs`).
    Route {
        path: "/admin/grants",
        access: Admin,
        methods: &[(Method::GET, Grants)],
    },
    Route {
        path: "/admin/grants:import",
        access: Admin,
        methods: &[(Method::POST, ImportGrants)],
    },
    // An end user's grant: imported, or deleted (the same as `DELETE /admin/tokens/{profile}`).
    Route {
        path: "/admin/grants/{profile}",
        access: Admin,
        methods: &[(Method::PUT, ImportGrant), (Method::DELETE, Revoke)],
    },
    // The profile form (`profile_form.rs`); `validate` first: it is no profile's name.
    Route {
        path: "/admin/profile-form",
        access: Admin,
        methods: &[(Method::GET, ProfileForms)],
    },
    Route {
        path: "/admin/profile-form/validate",
        access: Admin,
        methods: &[(Method::POST, ValidateProfileForm)],
    },
    Route {
        path: "/admin/profile-form/{name}",
        access: Admin,
        methods: &[
            (Method::GET, ProfileForm),
            (Method::PUT, SaveProfileForm),
            (Method::DELETE, DeleteProfileForm),
        ],
    },
    Route {
        path: "/admin/webhooks/deliveries",
        access: Admin,
        methods: &[(Method::GET, WebhookDeliveries)],
    },
    Route {
        path: "/admin/reload",
        access: Admin,
        methods: &[(Method::POST, Reload)],
    },
    Route {
        path: "/admin/certificates/reload",
        access: Admin,
        methods: &[(Method::POST, CertificatesReload)],
    },
];

/// The route matching `path`, and the segments its `{…}` matched, in order.
pub fn find(path: &str) -> Option<(&'static Route, Vec<&str>)> {
    ROUTES
        .iter()
        .find_map(|r| capture(r.path, path).map(|p| (r, p)))
}

/// Matches `path` against a pattern: `Some(params)` when it matches.
fn capture<'p>(pattern: &str, path: &'p str) -> Option<Vec<&'p str>> {
    let mut params = Vec::new();
    let mut want = pattern.split('/');
    let mut got = path.split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return Some(params),
            (Some(w), Some(g)) if w.starts_with('{') && w.ends_with('}') && !g.is_empty() => {
                params.push(g)
            }
            (Some(w), Some(g)) if w == g => {}
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_whole_segments_and_capture_one() {
        fn ep(path: &str, m: Method) -> Option<(Endpoint, Vec<&str>)> {
            find(path).and_then(|(r, p)| Some((r.endpoint(&m)?, p)))
        }
        assert_eq!(ep("/healthz", Method::GET), Some((Health, vec![])));
        assert_eq!(ep("/healthz/", Method::GET), None);
        assert_eq!(ep("/admin/", Method::GET), Some((Console, vec![])));
        assert_eq!(
            ep("/admin/profiles/demo", Method::GET),
            Some((Profile, vec!["demo"]))
        );
        assert_eq!(
            ep("/admin/profiles/demo/test", Method::POST),
            Some((TestProfile, vec!["demo"]))
        );
        assert_eq!(
            ep("/admin/profiles/demo/test/T1", Method::GET),
            Some((TestResult, vec!["demo", "T1"]))
        );
        assert!(find("/admin/profiles/demo/test/").is_none(), "an empty id");
        assert_eq!(
            ep("/admin/tokens/p", Method::DELETE),
            Some((Revoke, vec!["p"]))
        );
        assert_eq!(ep("/admin/grants", Method::GET), Some((Grants, vec![])));
        assert_eq!(
            ep("/admin/grants:import", Method::POST),
            Some((ImportGrants, vec![]))
        );
        assert_eq!(
            ep("/admin/grants/p", Method::PUT),
            Some((ImportGrant, vec!["p"]))
        );
        assert!(find("/admin/profiles/").is_none(), "an empty name");
        assert!(find("/admin/profiles/a/b").is_none());
        assert!(find("/admin/nothing").is_none());
        assert!(find("/admin/tokens/p")
            .unwrap()
            .0
            .endpoint(&Method::GET)
            .is_none());
    }

    #[test]
    fn every_route_under_admin_but_the_console_shell_and_sign_in_needs_the_token() {
        for r in ROUTES {
            let open = matches!(
                r.path,
                "/healthz"
                    | "/readyz"
                    | "/metrics"
                    | "/admin"
                    | "/admin/"
                    | "/admin/console.js"
                    | "/admin/console.css"
                    | "/admin/login"
            );
            assert_eq!(r.access == Access::Open, open, "{}", r.path);
            assert!(!r.methods.is_empty());
        }
        assert_eq!(find("/admin/tokens").unwrap().0.allow(), "GET");
    }
}
