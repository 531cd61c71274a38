//! Writes the `Module` impl and the export for a `#[module]` impl block.
//!
//! The generated code names only `::hotswap_module` (its `__private` module
//! reaches serde_json and the state envelope), so a module crate needs no
//! dependency but `hotswap-module` and `serde`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::ItemImpl;
use syn::spanned::Spanned;

use crate::args::Args;
use crate::methods::{ImplDef, MethodDef, Output};

/// The impl block as written, followed by what the attribute generates; on a
/// refusal, the errors followed by the block (so the rest of the crate still
/// resolves its methods and the errors shown are only ours).
pub fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let block: ItemImpl = match syn::parse2(item.clone()) {
        Ok(block) => block,
        Err(error) => {
            let error = syn::Error::new(
                error.span(),
                format!("#[module] goes on an `impl` block of the module's state type: {error}"),
            );
            return with_item(error, item);
        }
    };
    match generate(attr, &block) {
        Ok(generated) => quote! { #block #generated },
        Err(error) => with_item(error, item),
    }
}

fn with_item(error: syn::Error, item: TokenStream) -> TokenStream {
    let error = error.to_compile_error();
    quote! { #error #item }
}

/// The `Module` impl and the export, or every refusal found.
pub fn generate(attr: TokenStream, block: &ItemImpl) -> syn::Result<TokenStream> {
    let args = Args::parse(attr);
    let def = ImplDef::read(block);
    let (args, def) = match (args, def) {
        (Ok(args), Ok(def)) => (args, def),
        (Err(mut first), Err(second)) => {
            first.combine(second);
            return Err(first);
        }
        (Err(error), _) | (_, Err(error)) => return Err(error),
    };

    let self_ty = &block.self_ty;
    let Args { name, version, layout, layout_span } = &args;
    let method_consts = def.methods.iter().map(|method| {
        let name = &method.name;
        if method.read_only {
            quote! { ::hotswap_module::Method::read_only(#name) }
        } else {
            quote! { ::hotswap_module::Method::new(#name) }
        }
    });
    let names = def.methods.iter().map(|method| &method.name);
    let arms = def.methods.iter().map(dispatch_arm);
    let hooks = crate::hooks::generate(&def.hooks);
    let migrate = match &def.migrate {
        Some(migrate) => {
            let ident = &migrate.ident;
            quote_spanned! {ident.span()=> Self::#ident }
        }
        None => quote! {
            |previous| ::core::result::Result::Err(::hotswap_module::__private::no_migrate(
                <Self as ::hotswap_module::Module>::NAME,
                <Self as ::hotswap_module::Module>::VERSION,
                #layout,
                &previous,
            ))
        },
    };
    // The state's serde and Default bounds are checked where `layout` is
    // written, the part of the attribute that is about the state.
    let restore = quote_spanned! {*layout_span=>
        ::hotswap_module::__private::restore_state::<Self>(previous, #layout, #migrate)
    };
    let encode = quote_spanned! {*layout_span=>
        ::hotswap_module::__private::encode_state(self, #layout, &mut bytes)
    };

    Ok(quote! {
        #[automatically_derived]
        impl ::hotswap_module::Module for #self_ty {
            const NAME: &'static str = #name;
            const VERSION: &'static str = #version;
            const LAYOUT: ::core::option::Option<u32> = ::core::option::Option::Some(#layout);
            const METHODS: &'static [::hotswap_module::Method] = &[#(#method_consts),*];

            fn init(
                previous: ::core::option::Option<::hotswap_module::Previous<'_>>,
            ) -> ::core::result::Result<Self, ::hotswap_module::ModuleError> {
                #restore
            }

            fn handle(
                &mut self,
                method: &str,
                payload: &[u8],
            ) -> ::core::result::Result<::std::vec::Vec<u8>, ::hotswap_module::ModuleError> {
                ::hotswap_module::__private::call_without_host(self, method, payload)
            }

            fn call(
                &mut self,
                ctx: &mut ::hotswap_module::Context,
                method: &str,
                payload: &[u8],
                reply: &mut ::hotswap_module::Reply,
            ) -> ::core::result::Result<(), ::hotswap_module::ModuleError> {
                // Not every module uses all three.
                let _ = (&ctx, payload, &reply);
                match method {
                    #(#arms)*
                    _ => ::core::result::Result::Err(::hotswap_module::__private::unknown_method(
                        <Self as ::hotswap_module::Module>::NAME,
                        method,
                        &[#(#names),*],
                    )),
                }
            }

            fn snapshot(&self) -> ::core::result::Result<::std::vec::Vec<u8>, ::hotswap_module::ModuleError> {
                let mut bytes = ::std::vec::Vec::new();
                #encode?;
                ::core::result::Result::Ok(bytes)
            }

            #hooks
        }

        // Left out of the crate's own `cargo test` build, so its tests can
        // declare other #[module] types (an older version to migrate from).
        #[cfg(not(test))]
        ::hotswap_module::export_module!(#self_ty);
    })
}

/// `"name" => { decode the argument; run the method; write the reply }`.
fn dispatch_arm(method: &MethodDef) -> TokenStream {
    let MethodDef { ident, name, takes_context, argument, output, .. } = method;
    let mut call_args = vec![quote! { self }];
    if *takes_context {
        call_args.push(quote! { ctx });
    }
    let decode = argument.as_ref().map(|ty| {
        call_args.push(quote! { argument });
        // A type that is not `DeserializeOwned` is reported at the argument
        // (the type's tokens keep their place); the `let` stays the macro's,
        // so lints about it (`let` of a `()`) are not the author's.
        quote! {
            let argument = ::hotswap_module::__private::decode_argument::<#ty>(#name, payload)?;
        }
    });
    let run = quote! { Self::#ident(#(#call_args),*) };
    let answer = match output {
        Output::Unit => quote! {
            #run;
            ::hotswap_module::__private::write_reply(#name, &(), reply)
        },
        // A reply that is not `Serialize`, or an `Err` that is not
        // `Display`, is reported at the return type.
        Output::Value(ty) => quote_spanned! {ty.span()=>
            ::hotswap_module::__private::write_reply(#name, &#run, reply)
        },
        Output::Result(ty) => quote_spanned! {ty.span()=>
            ::hotswap_module::__private::write_result(#name, #run, reply)
        },
    };
    quote! {
        #name => {
            #decode
            #answer
        }
    }
}
