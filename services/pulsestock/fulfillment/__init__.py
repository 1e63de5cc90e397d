"""fulfillment: Replenishment plans, purchase orders, order routing and transfers."""
