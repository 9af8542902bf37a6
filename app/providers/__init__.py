"""One module per outside system. Only ``digitalocean`` knows DigitalOcean exists."""
