//! The routes of API versions 2.1–2.6, each to its handler; any other
//! method or path gets the JSON envelope.

use actix_web::web;

use super::state::ApiState;
use super::{handlers, keys};

/// Registers every route on an actix app.
pub fn configure(state: web::Data<ApiState>) -> impl FnOnce(&mut web::ServiceConfig) {
    use web::{get, post};
    move |cfg| {
        cfg.app_data(state)
            .service(resource("/version", get().to(handlers::version)))
            .service(resource(
                "/v{version}/quotes/identity",
                get().to(handlers::identity),
            ))
            .service(resource(
                "/v{version}/quotes/integrity",
                get().to(handlers::integrity),
            ))
            .service(resource(
                "/v{version}/keys/pubkey",
                get().to(handlers::pubkey),
            ))
            .service(resource("/v{version}/agent/info", get().to(handlers::info)))
            .service(resource("/v{version}/keys/verify", get().to(keys::verify)))
            .service(resource("/v{version}/keys/ukey", post().to(keys::ukey)))
            .service(resource("/v{version}/keys/vkey", post().to(keys::vkey)))
            .service(resource(
                "/v{version}/notifications/revocation",
                post().to(keys::revocation),
            ))
            .default_service(web::to(handlers::fallback));
    }
}

/// A resource with one method; any other method gets the JSON 405.
fn resource(path: &str, route: actix_web::Route) -> actix_web::Resource {
    web::resource(path)
        .route(route)
        .default_service(web::to(handlers::method_not_allowed))
}
