//! The console page served at `/` and `/vnc.html`.

/// The page's template; `{{vm}}` becomes the VM's name.
const TEMPLATE: &str = include_str!("../web/console.html");

/// The page for a VM, its name escaped so a name cannot inject markup.
pub fn render(vm_name: &str) -> String {
    TEMPLATE.replace("{{vm}}", &escape(vm_name))
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_vm_without_letting_it_inject_markup() {
        let page = render("<script>alert(1)</script> & co");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; co"));
        assert!(!page.contains("<script>alert"));
        assert!(!page.contains("{{vm}}"));
    }
}
