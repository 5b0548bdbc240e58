//! Column-aligned text tables, as `kubectl get` and `linkerd viz` print them: upper-case headers,
//! text columns left-aligned, number columns right-aligned, three spaces between columns.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

const GAP: &str = "   ";

/// Renders `rows` under `columns`; a row shorter than the header is padded with blanks.
pub fn render(columns: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let width = |s: &str| s.chars().count();
    let mut widths: Vec<usize> = columns.iter().map(|(h, _)| width(h)).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(cell));
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, ((_, align), w)) in columns.iter().zip(&widths).enumerate() {
            let cell = cells.next().unwrap_or("");
            if i > 0 {
                l.push_str(GAP);
            }
            let pad = " ".repeat(w.saturating_sub(width(cell)));
            match align {
                Align::Left => {
                    l.push_str(cell);
                    l.push_str(&pad);
                }
                Align::Right => {
                    l.push_str(&pad);
                    l.push_str(cell);
                }
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut columns.iter().map(|(h, _)| *h));
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_by_their_widest_cell() {
        let t = render(
            &[("NAME", Align::Left), ("RPS", Align::Right), ("NOTE", Align::Left)],
            &[
                vec!["product-v1".into(), "1.0rps".into(), "a".into()],
                vec!["x".into(), "12.5rps".into()],
            ],
        );
        assert_eq!(
            t,
            "NAME             RPS   NOTE\n\
             product-v1    1.0rps   a\n\
             x            12.5rps\n"
        );
    }
}
