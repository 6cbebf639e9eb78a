"""Command-line tools: wgpy (wg and wg-quick), wgpyd."""
