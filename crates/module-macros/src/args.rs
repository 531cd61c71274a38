//! The arguments of `#[module(name = "..", version = "..", layout = N)]`.

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::{Expr, ExprLit, Lit, LitInt, LitStr};

/// What the attribute says about the module.
pub struct Args {
    /// `Module::NAME`: a non-empty string literal.
    pub name: LitStr,
    /// `Module::VERSION`: a string literal, or an expression such as
    /// `env!("CARGO_PKG_VERSION")` that is a `&'static str` constant.
    pub version: Expr,
    /// `Module::LAYOUT`: 1 or more (0 means "no layout" in the descriptor).
    pub layout: u32,
    /// Where `layout` was written, for errors about the state type.
    pub layout_span: Span,
}

const USAGE: &str = "write #[hotswap_module::module(name = \"ledger\", version = \"1.0.0\", layout = 1)]";

impl Args {
    pub fn parse(attr: TokenStream) -> syn::Result<Args> {
        let mut name: Option<LitStr> = None;
        let mut version: Option<Expr> = None;
        let mut layout: Option<LitInt> = None;
        let parser = syn::meta::parser(|meta| {
            let key = meta.path.get_ident().map(ToString::to_string).unwrap_or_default();
            let duplicate = || meta.error(format_args!("`{key}` is given twice"));
            match key.as_str() {
                "name" if name.is_some() => Err(duplicate()),
                "version" if version.is_some() => Err(duplicate()),
                "layout" if layout.is_some() => Err(duplicate()),
                "name" => {
                    name = Some(meta.value()?.parse()?);
                    Ok(())
                }
                "version" => {
                    version = Some(meta.value()?.parse()?);
                    Ok(())
                }
                "layout" => {
                    layout = Some(meta.value()?.parse().map_err(|error| {
                        syn::Error::new(
                            error.span(),
                            "`layout` is a number: the layout of this version's state, 1 or more",
                        )
                    })?);
                    Ok(())
                }
                _ => Err(meta.error(format_args!(
                    "#[module] takes `name`, `version` and `layout`, not `{}`",
                    quote::ToTokens::to_token_stream(&meta.path)
                ))),
            }
        });
        parser.parse2(attr)?;

        let missing = |what: &str, example: &str| {
            syn::Error::new(Span::call_site(), format!("#[module] needs `{what}` ({example}); {USAGE}"))
        };
        let name = name.ok_or_else(|| missing("name", "the name the host loads it under"))?;
        if name.value().is_empty() {
            return Err(syn::Error::new(
                name.span(),
                "the module's `name` is empty; give the name the host loads it under",
            ));
        }
        let version = version.ok_or_else(|| missing("version", "e.g. version = \"1.0.0\""))?;
        if let Expr::Lit(ExprLit { lit: Lit::Str(text), .. }) = &version
            && text.value().is_empty()
        {
            return Err(syn::Error::new(
                text.span(),
                "the module's `version` is empty; give it one, e.g. \"1.0.0\"",
            ));
        }
        let layout = layout.ok_or_else(|| {
            missing("layout", "the layout number of its state: 1 for the first, one more at each change")
        })?;
        let layout_span = layout.span();
        let layout = layout.base10_parse::<u32>().map_err(|error| syn::Error::new(layout_span, error))?;
        if layout == 0 {
            return Err(syn::Error::new(
                layout_span,
                "layout 0 means \"no layout\" to the host; a typed module's layouts start at 1 (`layout = 1`)",
            ));
        }
        Ok(Args { name, version, layout, layout_span })
    }
}
