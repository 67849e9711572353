"""The example shop: a synthetic catalogue, Divolte clickstream and product pictures."""
