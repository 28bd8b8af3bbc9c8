// SPDX-License-Identifier: MIT
// Clean-room implementation for a local Livepeer-compatible devchain; written from the
// public function signatures and event only.
pragma solidity ^0.8.20;

import {Manager} from "./Manager.sol";

/// @title ServiceRegistry
/// @notice Where orchestrators advertise the URI gateways reach them at: each account sets
/// its own, anyone reads it. Registered in the Controller as "ServiceRegistry".
contract ServiceRegistry is Manager {
    mapping(address => string) private serviceURIs;

    event ServiceURIUpdate(address indexed addr, string serviceURI);

    constructor(address _controller) Manager(_controller) {}

    /// @notice Set the caller's service URI (replacing any earlier one).
    function setServiceURI(string calldata _serviceURI) external whenSystemNotPaused {
        serviceURIs[msg.sender] = _serviceURI;
        emit ServiceURIUpdate(msg.sender, _serviceURI);
    }

    /// @notice The service URI ``_addr`` set last; empty when it never set one.
    function getServiceURI(address _addr) external view returns (string memory) {
        return serviceURIs[_addr];
    }
}
