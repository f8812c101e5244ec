//! The route table: every route is registered together with its documentation, so the axum
//! router and the OpenAPI document (`docs.rs`) are built from one list and a handler cannot be
//! routed without an [`Operation`] describing it (docs/protocol.md, "REST surface").
//!
//! Each resource module lists its routes (`jobs::routes`, …); [`assemble`] turns the list into
//! the router, with access control on every route not marked public, and hands back the path
//! items the document is rendered from.

use std::sync::Arc;

use axum::Router;
use axum::handler::Handler;
use axum::routing::{MethodFilter, MethodRouter};
use serde_json::json;

use super::AppState;
use super::auth;
use crate::access::Tokens;
use crate::openapi::{Operation, Param, PathItem};

/// Errors every read may answer.
pub const READ_ERRORS: &[(u16, &str)] = &[
    (400, "bad query"),
    (401, "missing or invalid token"),
    (403, "token may not do this"),
];

/// Errors every request with a JSON body may answer.
pub const BODY_ERRORS: &[(u16, &str)] = &[
    (400, "malformed JSON"),
    (401, "missing or invalid token"),
    (403, "token may not do this"),
    (413, "body over 4 MiB"),
    (415, "not application/json"),
    (422, "invalid body"),
];

/// What every route behind access control may answer when a dependency is down.
const UNAVAILABLE: (u16, &str) = (503, "MongoDB or RabbitMQ is unavailable; retry later");

/// One path of the API: its handlers by method, each with its documentation.
pub struct ApiRoute {
    path: &'static str,
    public: bool,
    item: PathItem,
    handlers: MethodRouter<AppState>,
}

impl ApiRoute {
    /// A path behind access control; its operations also answer 503 when a dependency is down.
    pub fn new(path: &'static str) -> Self {
        Self {
            path,
            public: false,
            item: PathItem::default(),
            handlers: MethodRouter::new(),
        }
    }

    /// A path open to everyone (health checks, metrics, the dashboard, the document).
    pub fn public(path: &'static str) -> Self {
        Self {
            public: true,
            ..Self::new(path)
        }
    }

    /// Documents the path parameter `{name}`.
    pub fn param(mut self, name: &'static str, description: &'static str) -> Self {
        let schema = json!({"type": "string", "minLength": 1, "maxLength": 200});
        self.item.param(Param::path(name, description, schema));
        self
    }

    pub fn get<H, T>(self, operation: Operation, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.on(MethodFilter::GET, "get", operation, handler)
    }

    pub fn post<H, T>(self, operation: Operation, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.on(MethodFilter::POST, "post", operation, handler)
    }

    pub fn put<H, T>(self, operation: Operation, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.on(MethodFilter::PUT, "put", operation, handler)
    }

    pub fn delete<H, T>(self, operation: Operation, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.on(MethodFilter::DELETE, "delete", operation, handler)
    }

    fn on<H, T>(
        mut self,
        filter: MethodFilter,
        method: &'static str,
        operation: Operation,
        handler: H,
    ) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let operation = if self.public {
            operation.open()
        } else {
            operation.error(UNAVAILABLE.0, UNAVAILABLE.1)
        };
        self.item.operation(method, operation);
        self.handlers = self.handlers.on(filter, handler);
        self
    }
}

/// The documented paths, in table order.
pub type Documented = Vec<(&'static str, PathItem)>;

/// The router of `table` (without base path, fallbacks or state) and its documentation. With
/// `tokens`, every route but the public ones needs a bearer token.
pub fn assemble(table: Vec<ApiRoute>, tokens: Tokens) -> (Router<AppState>, Documented) {
    let mut protected = Router::new();
    let mut public = Router::new();
    let mut documented = Vec::with_capacity(table.len());
    for route in table {
        if route.public {
            public = public.route(route.path, route.handlers);
        } else {
            protected = protected.route(route.path, route.handlers);
        }
        documented.push((route.path, route.item));
    }
    if !tokens.is_empty() && protected.has_routes() {
        protected = protected.route_layer(axum::middleware::from_fn_with_state(
            Arc::new(tokens),
            auth::authorize,
        ));
    }
    (protected.merge(public), documented)
}
