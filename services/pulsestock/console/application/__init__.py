"""Each page's data, assembled from the services."""
