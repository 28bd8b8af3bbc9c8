// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {Controller} from "./Controller.sol";
import {IBondingManager, IMinter, IRoundsManager} from "./Interfaces.sol";

/// @title Manager
/// @notice Base for contracts that look their peers up in the Controller.
abstract contract Manager {
    uint256 internal constant PERC_DIVISOR = 1000000;

    Controller public controller;

    event ParameterUpdate(string param);

    constructor(address _controller) {
        controller = Controller(_controller);
    }

    modifier onlyControllerOwner() {
        require(msg.sender == controller.owner(), "caller must be Controller owner");
        _;
    }

    modifier whenSystemNotPaused() {
        require(!controller.paused(), "system is paused");
        _;
    }

    modifier whenRoundInitialized() {
        require(roundsManager().currentRoundInitialized(), "current round is not initialized");
        _;
    }

    function _lookup(string memory _name) internal view returns (address) {
        return controller.getContract(keccak256(bytes(_name)));
    }

    function roundsManager() internal view returns (IRoundsManager) {
        return IRoundsManager(_lookup("RoundsManager"));
    }

    function bondingManager() internal view returns (IBondingManager) {
        return IBondingManager(_lookup("BondingManager"));
    }

    function minter() internal view returns (IMinter) {
        return IMinter(_lookup("Minter"));
    }
}
