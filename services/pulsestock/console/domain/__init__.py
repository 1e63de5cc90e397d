"""What the console shows, as pure functions: view models, pulse states, rankings, charts."""
