"""What more than one service needs to know about the channels' APIs."""
