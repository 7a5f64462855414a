//! `GET /`: the draw-a-digit page, one HTML file with its script and style embedded in the binary (no CDN,
//! no build step). It posts the canvas as a PNG to `/predict` and shows the top classes and the picture
//! the model saw.

use axum::response::Html;

const PAGE: &str = include_str!("page.html");

pub async fn index() -> Html<&'static str> {
    Html(PAGE)
}
