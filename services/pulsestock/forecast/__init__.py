"""forecast: Demand forecasts and their accuracy record."""
